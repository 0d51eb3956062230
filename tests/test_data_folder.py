"""DomainBed folder scanning: each bad input gets a DataError naming it; decoding RGB / masks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from align.data.folder import DataError, DomainFolder, Sample, load_mask, load_rgb, scan_domainbed
from align.data.presets import PRESETS


def _img(size=(12, 10), value=(200, 30, 60)) -> Image.Image:
    return Image.new("RGB", size, value)


def make_tree(root: Path, spec: dict[str, dict[str, int]], ext="jpg", size=(12, 10)) -> Path:
    """Write ``root/<domain>/<class>/<i>.<ext>`` with `spec[domain][class]` images each."""
    for d, classes in spec.items():
        (root / d).mkdir(parents=True, exist_ok=True)
        for c, n in classes.items():
            (root / d / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _img(size, (10 * i, 100, 50)).save(root / d / c / f"{i}.{ext}")
    return root


def make_masks(masks: Path, folder: DomainFolder, ext="png") -> Path:
    for s in folder.samples:
        target = (masks / s.path).with_suffix(f".{ext}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(folder.root / s.path) as im:
            Image.new("L", im.size, 255).save(target)
    return masks


SPEC = {"A": {"cat": 2, "dog": 3}, "B": {"cat": 1, "dog": 2}}


def test_scan_ok_order_counts_and_record(tmp_path):
    root = make_tree(tmp_path / "data", SPEC)
    (root / ".hidden").mkdir()  # hidden domain folder: ignored
    (root / "A" / "cat" / "notes.txt").write_text("not an image")  # non-image: ignored
    (root / "A" / "cat" / ".0.jpg").write_bytes(b"resource fork")  # hidden file: ignored
    f = scan_domainbed(root)
    assert f.domains == ["A", "B"] and f.classes == ["cat", "dog"]
    assert [s.path for s in f.samples] == [
        "A/cat/0.jpg", "A/cat/1.jpg", "A/dog/0.jpg", "A/dog/1.jpg", "A/dog/2.jpg",
        "B/cat/0.jpg", "B/dog/0.jpg", "B/dog/1.jpg",
    ]
    assert f.samples[2] == Sample("A/dog/0.jpg", 1, 0, None)
    assert f.domain_indices(1) == [5, 6, 7]
    rec = f.to_json()
    assert rec["counts"] == {"A": {"cat": 2, "dog": 3}, "B": {"cat": 1, "dog": 2}}
    assert rec["n_samples"] == 8 and rec["skipped"] == [] and rec["domains"] == ["A", "B"]
    assert json.loads(json.dumps(rec)) == rec


def test_root_missing_or_file_or_without_domains(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_domainbed(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        scan_domainbed(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no domain folders"):
        scan_domainbed(tmp_path / "empty")


def test_differing_class_folders_name_domain_and_class(tmp_path):
    root = make_tree(tmp_path, {"A": {"cat": 1, "dog": 1}, "B": {"cat": 1, "emu": 1}})
    with pytest.raises(DataError) as e:
        scan_domainbed(root)
    msg = str(e.value)
    assert "domain 'B'" in msg and "missing ['dog']" in msg and "extra ['emu']" in msg


def test_class_names_in_two_unicode_forms_are_told_apart(tmp_path):
    # "café" composed (NFC) in one domain, decomposed (NFD, as macOS writes it) in the other.
    root = make_tree(tmp_path, {"A": {"caf\u00e9": 1}, "B": {"cafe\u0301": 1}})
    with pytest.raises(DataError) as e:
        scan_domainbed(root)
    assert "'cafe\\u0301' and 'caf\\xe9' differ only in Unicode normalisation" in str(e.value)


def test_empty_domain_is_named(tmp_path):
    root = make_tree(tmp_path, {"A": {"cat": 1}})
    (root / "Empty").mkdir()
    with pytest.raises(DataError, match="domain 'Empty'.*empty"):
        scan_domainbed(root)


def test_empty_class_is_named(tmp_path):
    root = make_tree(tmp_path, {"A": {"cat": 1, "dog": 1}, "B": {"cat": 1, "dog": 0}})
    (root / "B" / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="B/dog"):
        scan_domainbed(root)


def _truncated(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(buf, fmt)
    data = buf.getvalue()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "name,data",
    [("garbage.jpg", b"this is not a jpeg" * 10), ("cut.png", _truncated("PNG")),
     ("cut.jpg", _truncated("JPEG"))],
)
def test_bad_image_names_the_file(tmp_path, name, data):
    root = make_tree(tmp_path, SPEC)
    (root / "B" / "dog" / name).write_bytes(data)
    with pytest.raises(DataError) as e:
        scan_domainbed(root)
    assert str(root / "B" / "dog" / name) in str(e.value)


def test_truncation_detected_even_if_pillow_is_lenient(tmp_path):
    root = make_tree(tmp_path, SPEC)
    (root / "A" / "cat" / "cut.jpg").write_bytes(_truncated("JPEG"))
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(DataError, match="cut.jpg"):
            scan_domainbed(root)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_skip_bad_images_records_them(tmp_path, caplog):
    root = make_tree(tmp_path, SPEC)
    (root / "A" / "dog" / "bad.jpg").write_bytes(b"garbage")
    (root / "B" / "cat" / "cut.png").write_bytes(_truncated("PNG"))
    f = scan_domainbed(root, skip_bad_images=True)
    assert f.skipped == ["A/dog/bad.jpg", "B/cat/cut.png"]
    assert len(f) == 8 and all("bad" not in s.path and "cut" not in s.path for s in f.samples)
    assert f.to_json()["n_skipped"] == 2
    assert "skipped 2" in caplog.text


def test_class_emptied_by_skipping_is_still_an_error(tmp_path):
    root = make_tree(tmp_path, {"A": {"cat": 1, "dog": 1}, "B": {"cat": 1, "dog": 0}})
    (root / "B" / "dog" / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="B/dog"):
        scan_domainbed(root, skip_bad_images=True)


def test_verify_images_false_skips_decoding(tmp_path):
    root = make_tree(tmp_path, SPEC)
    (root / "A" / "dog" / "bad.jpg").write_bytes(b"garbage")
    assert len(scan_domainbed(root, verify_images=False)) == 9


# ----------------------------------------------------------------------------------------- masks


def test_masks_matched_by_stem(tmp_path):
    root = make_tree(tmp_path / "img", SPEC)
    masks = make_masks(tmp_path / "masks", scan_domainbed(root))
    f = scan_domainbed(root, masks_root=masks)
    assert f.samples[0].mask_path == "A/cat/0.png"
    assert f.mask_file(0) == masks.resolve() / "A/cat/0.png"


def test_masks_root_inside_image_root_is_not_a_domain(tmp_path):
    root = make_tree(tmp_path, SPEC)
    make_masks(root / "masks", scan_domainbed(root))
    assert scan_domainbed(root, masks_root=root / "masks").domains == ["A", "B"]


def test_masks_root_equal_to_image_root_is_refused(tmp_path):
    # Each image would be its own mask, of the right size: nothing else would catch it.
    root = make_tree(tmp_path / "img", SPEC)
    for masks in (root, tmp_path / "img" / "."):
        with pytest.raises(DataError, match="masks root .* is the image root itself"):
            scan_domainbed(root, masks_root=masks)
    with pytest.raises(DataError, match="is the image root itself"):
        scan_domainbed(root).with_masks(root)


def test_missing_mask_names_image_and_expected_location(tmp_path):
    root = make_tree(tmp_path / "img", SPEC)
    masks = make_masks(tmp_path / "masks", scan_domainbed(root))
    (masks / "B" / "dog" / "1.png").unlink()
    with pytest.raises(DataError) as e:
        scan_domainbed(root, masks_root=masks)
    assert "B/dog/1.jpg" in str(e.value) and str(masks.resolve() / "B/dog/1") in str(e.value)


def test_mask_of_other_size_names_both_files_and_sizes(tmp_path):
    root = make_tree(tmp_path / "img", SPEC, size=(12, 10))
    masks = make_masks(tmp_path / "masks", scan_domainbed(root))
    Image.new("L", (11, 10)).save(masks / "A" / "dog" / "2.png")
    with pytest.raises(DataError) as e:
        scan_domainbed(root, masks_root=masks)
    msg = str(e.value)
    assert str(masks.resolve() / "A/dog/2.png") in msg
    assert str(root.resolve() / "A/dog/2.jpg") in msg
    assert "11x10" in msg and "12x10" in msg


def test_two_candidate_masks_is_an_error(tmp_path):
    root = make_tree(tmp_path / "img", SPEC)
    masks = make_masks(tmp_path / "masks", scan_domainbed(root))
    Image.new("L", (12, 10)).save(masks / "A" / "cat" / "0.jpg")
    with pytest.raises(DataError, match="A/cat/0.jpg has 2 candidate masks"):
        scan_domainbed(root, masks_root=masks)


def test_unreadable_mask_is_an_error_even_when_skipping(tmp_path):
    root = make_tree(tmp_path / "img", SPEC)
    masks = make_masks(tmp_path / "masks", scan_domainbed(root))
    (masks / "A" / "cat" / "1.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="unreadable mask"):
        scan_domainbed(root, masks_root=masks, skip_bad_images=True)


# ------------------------------------------------------------------------------ presets / subsets


def test_preset_match_and_mismatch(tmp_path):
    p = PRESETS["vlcs"]
    spec = {d: {c: 1 for c in p.classes} for d in p.domains}
    root = make_tree(tmp_path / "vlcs", spec, size=(4, 4))
    f = scan_domainbed(root, preset="vlcs")
    assert f.domains == p.domains and f.classes == p.classes
    (root / "LabelMe").rename(root / "Labelme")
    with pytest.raises(DataError, match=r"missing \['LabelMe'\], extra \['Labelme'\]"):
        scan_domainbed(root, preset="vlcs")
    (root / "Labelme").rename(root / "LabelMe")
    (root / "SUN09" / "dog").rename(root / "SUN09" / "dogs")
    for d in p.domains:  # keep the domains consistent with each other; only the preset differs
        if d != "SUN09":
            (root / d / "dog").rename(root / d / "dogs")
    with pytest.raises(DataError, match=r"missing \['dog'\], extra \['dogs'\]"):
        scan_domainbed(root, preset="vlcs")
    # (was 'pacs', which is a known preset since `align prepare` added it)
    with pytest.raises(DataError, match="unknown dataset preset 'domainnet'"):
        scan_domainbed(root, preset="domainnet")


def test_domain_subset_and_unknown_domain(tmp_path):
    root = make_tree(tmp_path, {**SPEC, "C": {"cat": 1, "dog": 1}})
    f = scan_domainbed(root, domains=["C", "A"])
    assert f.domains == ["A", "C"] and {s.domain for s in f.samples} == {0, 1}
    with pytest.raises(DataError, match=r"unknown domain.*'Z'.*available: \['A', 'B', 'C'\]"):
        scan_domainbed(root, domains=["A", "Z"])
    with pytest.raises(DataError, match="domain selection is empty"):
        scan_domainbed(root, domains=[])


# -------------------------------------------------------------------------------------- decoding


def _roundtrip(tmp_path: Path, im: Image.Image, name: str) -> Path:
    path = tmp_path / name
    im.save(path)
    return path


def test_load_rgb_converts_every_mode(tmp_path):
    grey = _roundtrip(tmp_path, Image.new("L", (3, 2), 100), "g.png")
    wide = Image.fromarray(np.array([[65535, 32896, 0]], dtype=np.uint16))
    g16 = _roundtrip(tmp_path, wide, "g16.png")
    rgba = _roundtrip(tmp_path, Image.new("RGBA", (3, 2), (10, 20, 30, 0)), "a.png")
    la = _roundtrip(tmp_path, Image.new("LA", (3, 2), (70, 128)), "la.png")
    pal = Image.new("P", (3, 2), 1)
    pal.putpalette([0, 0, 0, 5, 150, 250] + [0] * 762)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 1
    p1 = _roundtrip(tmp_path, pal, "p.png")
    p2 = _roundtrip(tmp_path, pal_t, "pt.png")
    cmyk = _roundtrip(tmp_path, Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "c.jpg")
    expected = {grey: (100, 100, 100), rgba: (10, 20, 30), la: (70, 70, 70), p1: (5, 150, 250),
                p2: (5, 150, 250)}
    for path, rgb in expected.items():
        im = load_rgb(path)
        assert im.mode == "RGB" and im.getpixel((0, 0)) == rgb, path.name
    with Image.open(cmyk) as raw:
        assert raw.mode == "CMYK"
    c = load_rgb(cmyk)
    assert c.mode == "RGB" and min(c.getpixel((0, 0))) >= 250  # CMYK 0,0,0,0 is white
    assert np.asarray(load_rgb(g16))[0, :, 0].tolist() == [255, 128, 0]  # scaled, not clipped


def test_load_mask_modes(tmp_path):
    m8 = load_mask(_roundtrip(tmp_path, Image.new("L", (2, 2), 128), "m.png"))
    assert m8.mode == "L" and m8.getpixel((0, 0)) == 128
    m1 = load_mask(_roundtrip(tmp_path, Image.new("1", (2, 2), 1), "b.png"))
    assert m1.mode == "L" and m1.getpixel((0, 0)) == 255
    wide = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    m16 = load_mask(_roundtrip(tmp_path, wide, "s.png"))
    assert m16.mode == "F" and m16.getpixel((0, 0)) == pytest.approx(1.0)
    red = load_mask(_roundtrip(tmp_path, Image.new("RGB", (2, 2), (255, 0, 0)), "r.png"))
    assert red.mode == "L" and red.getpixel((0, 0)) == 255
    mf = load_mask(_roundtrip(tmp_path, Image.new("F", (2, 2), 0.25), "f.tiff"))
    assert mf.mode == "F" and mf.getpixel((0, 0)) == pytest.approx(0.25)


def test_load_mask_refuses_an_unscaled_boolean_mask(tmp_path):
    # 0/1 saved as 8-bit reads as at most 1/255: an empty mask the trainer would silently use.
    path = _roundtrip(tmp_path, Image.fromarray(np.eye(4, dtype=np.uint8)), "bool.png")
    with pytest.raises(DataError, match=r"bool\.png.*multiplied by 255"):
        load_mask(path)
    scaled = _roundtrip(tmp_path, Image.fromarray(np.eye(4, dtype=np.uint8) * 255), "ok.png")
    assert load_mask(scaled).getextrema() == (0, 255)


def _masks_copy(tiny_synth, tmp_path, paint):
    """A copy of the tiny benchmark's masks with `paint(path, mask_uint8)` writing each file."""
    import numpy as np
    from PIL import Image

    out = tmp_path / "masks"
    for src in sorted((tiny_synth / "masks").rglob("*.png")):
        dst = out / src.relative_to(tiny_synth / "masks")
        dst.parent.mkdir(parents=True, exist_ok=True)
        paint(dst, np.asarray(Image.open(src)))
    return out


def test_masks_are_decoded_at_scan_time_alpha_only_read_and_empty_counted(tiny_synth, tmp_path):
    """Regression (issue 10): 0/1 masks failed only mid-training (after the run's files were
    written); RGBA masks with the object only in alpha and all-empty masks silently turned
    guidance off."""
    import numpy as np
    from PIL import Image

    from align.data.folder import scan_domainbed

    images = tiny_synth / "images"
    zero_one = _masks_copy(tiny_synth, tmp_path / "a",
                           lambda p, m: Image.fromarray((m > 0).astype(np.uint8)).save(p))
    with pytest.raises(DataError, match="only holds the values 0 and 1"):
        scan_domainbed(images, masks_root=zero_one, verify_images=False)

    def alpha_only(p, m):
        rgba = np.zeros((*m.shape, 4), np.uint8)
        rgba[..., 3] = m
        Image.fromarray(rgba, "RGBA").save(p)

    folder = scan_domainbed(images, masks_root=_masks_copy(tiny_synth, tmp_path / "b", alpha_only))
    assert folder.empty_masks == []
    from align.data.decode import load_mask

    first = folder.mask_file(0)
    expected = np.asarray(Image.open(tiny_synth / "masks" / folder.samples[0].mask_path))
    assert np.array_equal(np.asarray(load_mask(first)), expected)

    empty = _masks_copy(tiny_synth, tmp_path / "c",
                        lambda p, m: Image.fromarray(np.zeros_like(m)).save(p))
    folder = scan_domainbed(images, masks_root=empty)
    assert len(folder.empty_masks) == len(folder.samples)
    assert folder.to_json()["empty_masks"] == len(folder.samples)


def test_a_mask_guided_run_whose_masks_are_all_empty_is_refused(tiny_synth, tmp_path):
    import numpy as np
    from PIL import Image

    from align.training.loop import Trainer
    from conftest import tiny_config

    empty = _masks_copy(tiny_synth, tmp_path, lambda p, m: Image.fromarray(np.zeros_like(m)).save(p))
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="every mask under .* is empty"):
        Trainer(tiny_config(tiny_synth, run, algorithm="gradia", masks=str(empty)))
    assert not run.exists()
    Trainer(tiny_config(tiny_synth, run, algorithm="erm", masks=str(empty), steps=4))  # ERM: fine
