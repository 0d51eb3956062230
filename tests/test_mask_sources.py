"""Mask sources, degradations, IoU and the cached mask-folder builder (align.masks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage.morphology import disk

from align.masks import (
    DEGRADATIONS, MASK_SOURCES, MaskBuildError, build_mask_folder, degrade_mask, degrade_to_iou,
    dilate_mask, erode_mask, generic_segmentation, mask_iou, mask_quality_report, read_record,
    shift_mask,
)
from align.data.decode import DataError, load_mask as decode_mask, mask_array
from align.masks import build as build_mod

SIZE = 32


def load_mask(path: Path) -> np.ndarray:
    """A mask as the mask tools read it: the one decoder, then uint8 0..255."""
    return mask_array(decode_mask(path))


def _disc(cy: float, cx: float, r: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _square(top: int, left: int, side: int, size: int = 40) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[top : top + side, left : left + side] = True
    return m


def _scene(rng: np.random.Generator, bg: tuple, fg: tuple) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc at a random place on a plain, slightly noisy background."""
    mask = _disc(rng.uniform(11, 21), rng.uniform(11, 21), rng.uniform(6, 9))
    img = np.empty((SIZE, SIZE, 3), dtype=np.float64)
    img[:] = bg
    img[mask] = fg
    img += rng.normal(0, 4, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """2 domains x 2 classes x 3 images; PNG images in one domain, BMP in the other (masks too,
    to exercise "any extension"). Returns (images_root, gt_root, {rel image path: truth})."""
    rng = np.random.default_rng(0)
    images, gts, truth = tmp_path / "images", tmp_path / "masks", {}
    colours = {"d0": ((40, 60, 50), (235, 210, 70)), "d1": ((200, 200, 210), (30, 40, 150))}
    for domain, ext in (("d0", "png"), ("d1", "bmp")):
        for cls in ("a", "b"):
            (images / domain / cls).mkdir(parents=True)
            (gts / domain / cls).mkdir(parents=True)
            for i in range(3):
                img, mask = _scene(rng, *colours[domain])
                Image.fromarray(img).save(images / domain / cls / f"{i}.{ext}")
                Image.fromarray(mask.astype(np.uint8) * 255).save(gts / domain / cls / f"{i}.{ext}")
                truth[f"{domain}/{cls}/{i}.{ext}"] = mask
    return images, gts, truth


# --- mask_iou -------------------------------------------------------------------------------


def test_mask_iou_edge_cases() -> None:
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    assert mask_iou(empty, empty) == 1.0  # both say "no object": full agreement (documented)
    assert mask_iou(empty, full) == 0.0
    assert mask_iou(full, full) == 1.0
    half = np.zeros((4, 4), bool)
    half[:2] = True
    assert mask_iou(half, full) == 0.5
    # The three accepted encodings binarise at half scale.
    assert mask_iou(half.astype(np.uint8) * 255, half.astype(np.float32)) == 1.0
    assert mask_iou(np.full((2, 2), 128, np.uint8), np.ones((2, 2), bool)) == 1.0
    assert mask_iou(np.full((2, 2), 127, np.uint8), np.zeros((2, 2), bool)) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(np.zeros((2, 2), bool), np.zeros((3, 2), bool))
    with pytest.raises(TypeError, match="int64"):
        mask_iou(np.zeros((2, 2), np.int64), empty[:2, :2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mask_iou(np.full((2, 2), 2.0), empty[:2, :2])


def test_load_mask_refuses_unscaled_boolean_masks(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(np.eye(4, dtype=np.uint8)).save(path)  # 0/1 instead of 0/255
    with pytest.raises(ValueError, match="multiplied by 255"):
        load_mask(path)


def test_mask_tools_read_masks_as_the_trainer_does(tmp_path: Path) -> None:
    # A colour annotation counts by its channel maximum (luminance would make pure red 76), and
    # 16-bit / float masks are scaled, exactly as align.data.decode reads them for training.
    from align.data.decode import load_mask as train_load_mask
    from align.data.transforms import mask_to_tensor

    cases = {
        "red.png": (Image.new("RGB", (2, 2), (255, 0, 0)), 255),
        "wide.png": (Image.fromarray(np.full((2, 2), 32896, np.uint16)), 128),
        "float.tiff": (Image.new("F", (2, 2), 0.25), 64),
    }
    for name, (im, expected) in cases.items():
        im.save(tmp_path / name)
        ours = load_mask(tmp_path / name)
        assert ours.dtype == np.uint8 and ours.tolist() == [[expected] * 2] * 2, name
        trained = mask_to_tensor(train_load_mask(tmp_path / name))
        assert torch.allclose(trained, torch.full_like(trained, expected / 255), atol=1 / 255), name


# --- generic segmentation ---------------------------------------------------------------------


def test_generic_finds_disc_on_plain_background(tree) -> None:
    images, _, truth = tree
    for rel, mask in truth.items():
        img = np.asarray(Image.open(images / rel).convert("RGB"))
        found = generic_segmentation(img)
        assert mask_iou(found, mask) > 0.7, rel
        assert np.array_equal(found, generic_segmentation(img))  # deterministic


def test_generic_uniform_image_is_empty_and_params_checked() -> None:
    assert not generic_segmentation(np.full((SIZE, SIZE, 3), 90, np.uint8)).any()
    with pytest.raises(TypeError, match="unknown generic"):
        generic_segmentation(np.zeros((8, 8, 3), np.uint8), n_segment=10)
    with pytest.raises(ValueError, match="border_quantile"):
        generic_segmentation(np.zeros((8, 8, 3), np.uint8), border_quantile=2)


# --- degradations: known answers --------------------------------------------------------------


@pytest.mark.parametrize("dx,dy", [(3, -2), (-4, 0), (0, 5), (9, 9)])
def test_shift_square_gives_exact_iou(dx: int, dy: int) -> None:
    side, sq = 10, _square(12, 14, 10)
    inter = (side - abs(dx)) * (side - abs(dy))
    out = shift_mask(sq, dx, dy)
    assert out.sum() == side * side  # moved, not clipped: the square stays inside the image
    assert np.array_equal(out, _square(12 + dy, 14 + dx, 10))
    assert mask_iou(out, sq) == pytest.approx(inter / (2 * side * side - inter), abs=1e-12)


def test_shift_zero_fills_and_can_leave_the_frame() -> None:
    sq = _square(0, 0, 10)
    assert shift_mask(sq, -3, 0).sum() == 7 * 10  # content moved past the edge is lost
    assert not shift_mask(sq, 40, 0).any()
    with pytest.raises(ValueError, match="whole pixels"):
        shift_mask(sq, 1.5, 0)


@pytest.mark.parametrize("r", [1, 2, 3, 5])
def test_dilation_of_square_grows_area_as_expected(r: int) -> None:
    side, sq = 8, _square(16, 16, 8)
    # Minkowski sum of an s x s square and the lattice disk D of radius r:
    # s^2 + 4 s r + |D| - 4 r - 1 pixels (the sides grow by r, the corners by disk quarters).
    expected = side * side + 4 * side * r + int(disk(r).sum()) - 4 * r - 1
    out = dilate_mask(sq, r)
    assert out.sum() == expected
    assert np.array_equal(out, ndimage.binary_dilation(sq, structure=disk(r).astype(bool)))


@pytest.mark.parametrize("r", [1, 2, 3])
def test_erosion_of_square_shrinks_as_expected(r: int) -> None:
    side, sq = 12, _square(10, 10, 12)
    out = erode_mask(sq, r)
    assert out.sum() == (side - 2 * r) ** 2
    assert np.array_equal(out, _square(10 + r, 10 + r, side - 2 * r))
    # Outside the image counts as object, so a mask at the edge is not eaten from the edge.
    edge = erode_mask(_square(0, 0, 12), r)
    assert np.array_equal(edge, _square(0, 0, 12 - r))
    assert np.array_equal(erode_mask(sq, r), ndimage.binary_erosion(
        sq, structure=disk(r).astype(bool), border_value=1))


@pytest.mark.parametrize("level", [0.0, 0.1, 0.3, 0.6, 1.0])
def test_blobs_iou_is_known(level: float) -> None:
    mask = _disc(20, 20, 8, size=48)
    n = int(mask.sum())
    k = round(level * n)
    out = degrade_mask(mask, "blobs", level, seed=3)
    assert mask_iou(out, mask) == pytest.approx((n - k) / (n + k))
    assert np.array_equal(out, degrade_mask(mask, "blobs", level, seed=3))  # deterministic
    if 0 < level < 1:
        assert not np.array_equal(out, degrade_mask(mask, "blobs", level, seed=4))


def test_degradation_levels_are_validated() -> None:
    mask = _disc(16, 16, 6)
    with pytest.raises(ValueError, match="blobs level"):
        degrade_mask(mask, "blobs", 1.5)
    with pytest.raises(ValueError, match="dilate level"):
        degrade_mask(mask, "dilate", -1)
    with pytest.raises(KeyError, match="unknown mask degradation 'blur'"):
        degrade_mask(mask, "blur", 1)


@pytest.mark.parametrize("kind", ["dilate", "erode", "shift", "blobs"])
@pytest.mark.parametrize("target", [0.9, 0.7, 0.5])
def test_degrade_to_iou_hits_target(kind: str, target: float) -> None:
    mask = _disc(32, 30, 14, size=64)
    out, iou = degrade_to_iou(mask, target, kind, seed=1)
    assert abs(iou - target) <= 0.05
    assert iou == mask_iou(out, mask)
    assert np.array_equal(out, degrade_to_iou(mask, target, kind, seed=1)[0])


def test_degrade_to_iou_extremes() -> None:
    mask = _disc(16, 16, 6)
    out, iou = degrade_to_iou(mask, 1.0, "dilate", seed=0)
    assert iou == 1.0 and np.array_equal(out, mask)
    # Dilating an object cannot push IoU below its share of the image: the closest is returned.
    big = _disc(16, 16, 15)
    out, iou = degrade_to_iou(big, 0.1, "dilate", seed=0)
    assert out.all() and iou == pytest.approx(big.mean())


# --- build_mask_folder ------------------------------------------------------------------------


def test_build_generic_mirrors_layout_and_records_ious(tree, tmp_path: Path) -> None:
    images, gts, truth = tree
    calls = []
    out = build_mask_folder(images, tmp_path / "generic", "generic", gt_root=gts,
                            progress=lambda done, total: calls.append((done, total)))
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == sorted(str(Path(rel).with_suffix(".png")) for rel in truth)
    assert calls[-1] == (len(truth), len(truth))
    rec = read_record(out)
    assert rec["source"] == "generic" and rec["seed"] == 0 and rec["n_images"] == len(truth)
    assert rec["params"]["n_segments"] == 200  # defaults are recorded, not just overrides
    for rel, mask in truth.items():
        entry = rec["images"][rel]
        got = load_mask(out / entry["mask"])
        assert set(np.unique(got)) <= {0, 255}
        assert entry["iou"] == pytest.approx(mask_iou(got, mask))
        assert entry["iou"] > 0.7
    assert rec["mean_iou"] == pytest.approx(np.mean([e["iou"] for e in rec["images"].values()]))
    assert set(rec["mean_iou_per_domain"]) == {"d0", "d1"}
    report = mask_quality_report(out, gts)
    assert report["n"] == len(truth) and report["mean_iou"] == pytest.approx(rec["mean_iou"])


def test_build_without_gt_records_no_iou(tree, tmp_path: Path) -> None:
    images, _, _ = tree
    rec = read_record(build_mask_folder(images, tmp_path / "g", "generic"))
    assert rec["mean_iou"] is None and all(e["iou"] is None for e in rec["images"].values())


def test_ground_truth_and_degraded_sources(tree, tmp_path: Path) -> None:
    images, gts, truth = tree
    rec = read_record(build_mask_folder(images, tmp_path / "gt", "ground_truth", gt_root=gts))
    assert rec["mean_iou"] == 1.0
    out = build_mask_folder(images, tmp_path / "deg", "degraded", gt_root=gts,
                            params={"kind": "blobs", "target_iou": 0.7}, seed=5)
    rec = read_record(out)
    assert abs(rec["mean_iou"] - 0.7) <= 0.05
    assert all(0 < e["level"] <= 1 for e in rec["images"].values())
    # Same (seed, path) -> same degradation: recomputing one image by hand reproduces it.
    rel = sorted(truth)[0]
    again = build_mod.compute_mask(
        MASK_SOURCES.get("degraded")({"kind": "blobs", "target_iou": 0.7}),
        build_mod.MaskJob(rel, str(images / rel), str(gts / rel), build_mod.image_seed(5, rel)),
    )[0]
    assert np.array_equal(again, load_mask(out / rec["images"][rel]["mask"]))
    shifted = read_record(build_mask_folder(images, tmp_path / "sh", "degraded", gt_root=gts,
                                            params={"kind": "shift", "dx": 2, "dy": 0}))
    assert shifted["mean_iou"] < 1.0


@pytest.mark.parametrize("params,match", [
    ({}, "kind"),
    ({"kind": "dilate"}, "exactly one"),
    ({"kind": "dilate", "level": 1, "target_iou": 0.5}, "exactly one"),
    ({"kind": "dilate", "dx": 1, "dy": 1}, "only with kind='shift'"),
    ({"kind": "blobs", "level": 3}, "blobs level"),
    ({"kind": "erode", "target_iou": 1.5}, "target_iou"),
    ({"kind": "erode", "level": 1, "radius": 2}, "does not take"),
])
def test_degraded_params_are_validated(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MASK_SOURCES.get("degraded")(params)


def test_cache_hit_does_not_recompute(tree, tmp_path: Path, monkeypatch) -> None:
    images, gts, _ = tree
    out = build_mask_folder(images, tmp_path / "m", "generic", gt_root=gts)
    before = (out / "mask_source.json").read_bytes()

    def boom(*args, **kwargs):
        raise AssertionError("recomputed despite a matching cache")

    monkeypatch.setattr(build_mod, "compute_mask", boom)
    assert build_mask_folder(images, tmp_path / "m", "generic", gt_root=gts) == out
    # Explicitly passing a default is the same key as leaving it out.
    build_mask_folder(images, tmp_path / "m", "generic", gt_root=gts, params={"sigma": 1.0})
    assert (out / "mask_source.json").read_bytes() == before


def test_changed_key_errors_unless_overwrite(tree, tmp_path: Path) -> None:
    images, gts, _ = tree
    out = tmp_path / "m"
    build_mask_folder(images, out, "degraded", gt_root=gts, params={"kind": "dilate", "level": 1})
    with pytest.raises(FileExistsError, match=r"params level: 1 -> 2.*overwrite=True"):
        build_mask_folder(images, out, "degraded", gt_root=gts,
                          params={"kind": "dilate", "level": 2})
    with pytest.raises(FileExistsError, match="seed: 0 -> 1"):
        build_mask_folder(images, out, "degraded", gt_root=gts,
                          params={"kind": "dilate", "level": 1}, seed=1)
    build_mask_folder(images, out, "degraded", gt_root=gts, params={"kind": "dilate", "level": 2},
                      overwrite=True)
    assert read_record(out)["params"]["level"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failure_midway_leaves_nothing(tree, tmp_path: Path, monkeypatch) -> None:
    images, gts, _ = tree
    real = build_mod.compute_mask

    def flaky(source, job):
        if job.rel == "d0/a/2.png":  # the third of twelve images
            raise RuntimeError("disk on fire")
        return real(source, job)

    monkeypatch.setattr(build_mod, "compute_mask", flaky)
    with pytest.raises(MaskBuildError, match=r"d0/a/2\.png.*disk on fire"):
        build_mask_folder(images, tmp_path / "m", "generic", gt_root=gts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "masks"]


def test_folder_source_validates_and_copies(tree, tmp_path: Path) -> None:
    images, gts, truth = tree
    out = build_mask_folder(images, tmp_path / "copy", "folder", params={"root": str(gts)},
                            gt_root=gts)
    assert read_record(out)["mean_iou"] == 1.0
    rel = sorted(truth)[-1]  # a .bmp mask, stored as .png
    assert np.array_equal(load_mask(out / Path(rel).with_suffix(".png")), load_mask(gts / rel))
    (gts / rel).unlink()
    # One pairing for training and the mask tools (issue 9), so a missing mask is a DataError
    # here too (it was a FileNotFoundError of the mask tools' own pairing).
    with pytest.raises(DataError, match=rf"1 of 12 images\):\n  no mask for image {rel}"):
        build_mask_folder(images, tmp_path / "copy2", "folder", params={"root": str(gts)})
    with pytest.raises(ValueError, match="needs params"):
        build_mask_folder(images, tmp_path / "copy3", "folder")


def test_refuses_foreign_and_overlapping_folders(tree, tmp_path: Path) -> None:
    images, gts, _ = tree
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to touch"):
        build_mask_folder(images, foreign, "generic", overwrite=True)
    assert (foreign / "notes.txt").exists()
    with pytest.raises(ValueError, match="overlaps images_root"):
        build_mask_folder(images, images / "masks", "generic")
    with pytest.raises(ValueError, match="needs gt_root"):
        build_mask_folder(images, tmp_path / "x", "ground_truth")
    with pytest.raises(KeyError, match="unknown mask source 'sam'"):
        build_mask_folder(images, tmp_path / "x", "sam")


def test_registries_list_every_source_and_degradation() -> None:
    assert MASK_SOURCES.names() == ["folder", "generic", "ground_truth", "degraded"]
    assert DEGRADATIONS.names() == ["dilate", "erode", "shift", "blobs"]


@pytest.mark.parametrize("source,params", [
    ("degraded", {"kind": "shift", "level": 3}), ("generic", {}),
])
def test_worker_threads_match_serial(tree, tmp_path: Path, source: str, params: dict) -> None:
    images, gts, _ = tree
    serial = build_mask_folder(images, tmp_path / "s", source, gt_root=gts, params=params,
                               workers=1)
    parallel = build_mask_folder(images, tmp_path / "p", source, gt_root=gts, params=params,
                                 workers=2)
    a, b = read_record(serial), read_record(parallel)
    assert a["images"] == b["images"] and a["key"] == b["key"]
    for e in a["images"].values():
        assert (serial / e["mask"]).read_bytes() == (parallel / e["mask"]).read_bytes()
    assert json.loads((parallel / "mask_source.json").read_text())["n_images"] == 12
