"""Tests for the built-in synthetic benchmark (`align.data.synthetic`).

Everything runs on small images / few scenes so the whole file takes a few seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from align.data import synthetic as synth
from align.data.synthetic import (
    BACKGROUND_CUE_BLEND,
    CUE_COLORS,
    CUE_KINDS,
    DEFAULT_CONFIG,
    SHAPES,
    SynthConfig,
    cue_index,
    cue_mapping,
    dataset_matches,
    generate,
    render,
    render_scene,
)
from align.data.synthetic_draw import shape_mask

SMALL = SynthConfig(size=32, n_per_domain=8)
BACKGROUND = dataclasses.replace(DEFAULT_CONFIG, cue_kind="background")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _cue_mask(scene: synth.Scene) -> np.ndarray:
    y0, x0, y1, x1 = scene.cue_box
    m = np.zeros(scene.mask.shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _quiet(config: SynthConfig) -> SynthConfig:
    """The same scenes without pixel noise (all random draws still happen, in order)."""
    return dataclasses.replace(config, noise_scale=0.0)


# --- rendering -------------------------------------------------------------------------

def test_defaults_are_the_documented_benchmark():
    c = DEFAULT_CONFIG
    assert (c.size, c.n_per_domain, c.cue_strength) == (64, 500, 0.9)
    assert c.domains == ("photo", "sketch", "noisy", "texture")
    assert c.classes == ("circle", "square", "triangle", "cross")
    assert c.n_cues == 4 and c.cue_px == 9


#: sha256 over 80 default scenes (every 25th of each domain, seed 0): image, object mask, cue
#: box. Computed before the background cue existed; the default benchmark must never change.
DEFAULT_SCENES_SHA256 = "ce715e76590801d4f92fb74e131972dbd4472a519e62626f79bc4e66d03dda2d"


def test_default_scenes_are_pinned():
    h = hashlib.sha256()
    for d in range(4):
        for i in range(0, 500, 25):
            s = render_scene(DEFAULT_CONFIG, 0, d, i)
            h.update(s.image.tobytes())
            h.update(s.mask.tobytes())
            h.update(np.asarray(s.cue_box, np.int64).tobytes())
    assert h.hexdigest() == DEFAULT_SCENES_SHA256


#: sha256 of every benchmark shape's mask at 15 random poses (sizes 16, 64, 128), computed
#: before the upstream task's shapes were added beside them.
SHAPE_MASKS_SHA256 = "558c1698be078ec0470d8d3cd995a52bdb9076535b5fbe8400b23ed7d3020d10"


def test_benchmark_shape_masks_are_pinned():
    h, rng = hashlib.sha256(), np.random.default_rng(0)
    for shape in SHAPES:
        for size in (16, 64, 128):
            for _ in range(5):
                r = rng.uniform(0.15, 0.4) * size
                cy, cx = rng.uniform(r + 1, size - 1 - r, 2)
                h.update(shape_mask(shape, size, cy, cx, r, rng.uniform(0, 2 * np.pi)).tobytes())
    assert h.hexdigest() == SHAPE_MASKS_SHA256


def test_render_types_and_round_robin_labels():
    for i in range(6):
        img, mask, label = render(SMALL, 0, 1, i)
        assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
        assert mask.dtype == bool and mask.shape == (32, 32)
        assert isinstance(label, int) and label == i % len(SMALL.classes)


def test_render_is_deterministic_and_seed_sensitive():
    a, b = render(SMALL, 7, 2, 3), render(SMALL, 7, 2, 3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    c = render(SMALL, 8, 2, 3)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("domain_index", range(4))
def test_mask_is_exactly_the_object(domain_index):
    config = SynthConfig(size=48, n_per_domain=12, classes=SHAPES, domains=DEFAULT_CONFIG.domains)
    for i in range(12):
        noisy = render_scene(config, 3, domain_index, i)
        scene = render_scene(_quiet(config), 3, domain_index, i)
        assert np.array_equal(noisy.mask, scene.mask)  # noise never moves the object
        mask, img = scene.mask, scene.image.astype(int)
        assert mask.sum() > 20
        # Hard edges: every mask pixel has the object colour, and no pixel just outside does.
        assert (img[mask] == scene.object_color).all()
        ring = synth._dilate(mask, 1) & ~mask
        assert (img[ring] != scene.object_color).any(axis=1).all()
        # Fully inside the image.
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


@pytest.mark.parametrize("kind", CUE_KINDS)
@pytest.mark.parametrize("domain_index", range(4))
def test_object_stands_out_from_its_local_background(domain_index, kind):
    config = dataclasses.replace(DEFAULT_CONFIG, cue_kind=kind)
    for i in range(20):
        scene = render_scene(config, 0, domain_index, i)
        # next to a square cue the background is unchanged; a background cue is all around
        ring = synth._dilate(scene.mask, 3) & ~scene.mask
        if kind == "square":
            ring &= ~scene.cue_mask
        img = scene.image.astype(float)
        contrast = np.abs(img[scene.mask].mean(0) - img[ring].mean(0)).sum()
        assert contrast > 60, (domain_index, i, contrast)


@pytest.mark.parametrize("kind", CUE_KINDS)
def test_object_colour_does_not_reveal_the_class(kind):
    config = _quiet(SynthConfig(size=32, n_per_domain=400, cue_kind=kind))
    for d in range(len(config.domains)):
        colours = {k: [] for k in range(config.n_cues)}
        for i in range(400):
            scene = render_scene(config, 0, d, i)
            colours[scene.label].append(scene.object_color)
        means = np.array([np.mean(colours[k], axis=0) for k in sorted(colours)])
        assert np.ptp(means, axis=0).max() < 45, means


def test_every_shape_renders_at_small_and_large_sizes():
    for size in (16, 128):
        config = SynthConfig(size=size, n_per_domain=6, classes=SHAPES)
        for d in range(len(config.domains)):
            for i in range(len(SHAPES)):
                _, mask, label = render(config, 1, d, i)
                assert label == i and 0 < mask.sum() < 0.6 * size * size


# --- the cue ---------------------------------------------------------------------------

def test_cue_lies_in_the_background_only():
    config = _quiet(DEFAULT_CONFIG)
    for d in range(4):
        for i in range(25):
            scene = render_scene(config, 0, d, i)
            cue = _cue_mask(scene)
            assert cue.sum() == config.cue_px ** 2  # the whole square is inside the image
            assert not (cue & synth._dilate(scene.mask, config.margin_px)).any()
            assert (scene.image[cue] == CUE_COLORS[scene.cue][1]).all()


@pytest.mark.parametrize("strength", [1.0, 0.9, 0.5, 0.0])
def test_cue_agrees_with_the_mapping_at_the_configured_rate(strength):
    config = SynthConfig(size=32, n_per_domain=300, cue_strength=strength)
    scenes = [render_scene(config, 0, d, i) for d in range(4) for i in range(300)]
    for s, d in zip(scenes, np.repeat(range(4), 300)):
        assert s.cue_agrees == (s.cue == cue_index(config, int(d), s.label))
    rate = np.mean([s.cue_agrees for s in scenes])
    expected = strength + (1 - strength) / config.n_cues  # a random cue can agree by chance
    if strength == 1.0:
        assert rate == 1.0
    assert abs(rate - expected) < 0.05, (rate, expected)


def test_cue_strength_changes_only_the_cue():
    strong, none = SynthConfig(size=32, cue_strength=1.0), SynthConfig(size=32, cue_strength=0.0)
    for i in range(10):
        a, b = render_scene(strong, 0, 0, i), render_scene(none, 0, 0, i)
        assert np.array_equal(a.mask, b.mask) and a.cue_box == b.cue_box
        outside = ~_cue_mask(a)
        assert np.array_equal(a.image[outside], b.image[outside])


# --- the background cue ----------------------------------------------------------------

def test_square_is_the_default_and_naming_it_changes_nothing(tmp_path):
    assert DEFAULT_CONFIG.cue_kind == "square"
    square = dataclasses.replace(SMALL, cue_kind="square")
    assert square == SMALL
    assert _files(generate(tmp_path / "a", SMALL, seed=1)) == \
        _files(generate(tmp_path / "b", square, seed=1))


def test_background_cue_marks_every_pixel_but_the_object():
    for d in range(4):
        for i in range(10):
            scene = render_scene(BACKGROUND, 0, d, i)
            assert scene.cue_box is None and np.array_equal(scene.cue_mask, ~scene.mask)


@pytest.mark.parametrize("domain_index", range(4))
def test_background_cue_tints_the_domain_background_with_the_cue_colour(domain_index):
    square, background = _quiet(DEFAULT_CONFIG), _quiet(BACKGROUND)
    a = BACKGROUND_CUE_BLEND
    for i in range(12):
        sq = render_scene(square, 0, domain_index, i)
        bg = render_scene(background, 0, domain_index, i)
        # Same background and object placement: the square-cue twin shows, outside its own
        # cue square, the untinted domain background that the tint was blended into.
        assert np.array_equal(sq.mask, bg.mask)
        region = ~sq.mask & ~sq.cue_mask
        tint = np.array(CUE_COLORS[bg.cue][1], dtype=float)
        expected = (1 - a) * sq.image[region].astype(float) + a * tint
        assert np.abs(bg.image[region] - expected).max() <= 1.0  # both images are rounded
        assert (bg.image[bg.mask] == bg.object_color).all()  # the object is not tinted


def test_background_cue_follows_the_mapping():
    config = SynthConfig(size=32, n_per_domain=300, cue_kind="background")
    scenes = {d: [render_scene(config, 0, d, i) for i in range(300)] for d in range(4)}
    for d, domain_scenes in scenes.items():
        for s in domain_scenes:
            assert s.cue_agrees == (s.cue == cue_index(config, d, s.label))
    rate = np.mean([s.cue_agrees for ss in scenes.values() for s in ss])
    assert abs(rate - (0.9 + 0.1 / 4)) < 0.05
    always = dataclasses.replace(config, cue_strength=1.0)
    for d in range(4):
        for i in range(8):
            s = render_scene(always, 0, d, i)
            assert s.cue == cue_index(always, d, s.label)
    # Inside a domain the background's mean colour tells the cue: nearest centroid (fitted on
    # 200 scenes, tested on 100) recovers it, whatever the domain's own background colours.
    for d in range(4):
        means = np.array([s.image[s.cue_mask].mean(0) for s in scenes[d]])
        cues = np.array([s.cue for s in scenes[d]])
        centroids = np.array([means[:200][cues[:200] == c].mean(0) for c in range(4)])
        pred = np.abs(means[200:, None] - centroids[None]).sum(2).argmin(1)
        assert (pred == cues[200:]).mean() > 0.95, d


def test_background_dataset_layout_and_record(tmp_path):
    config = dataclasses.replace(SMALL, cue_kind="background")
    out = generate(tmp_path / "bg", config, seed=2)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["config"]["cue_kind"] == "background" and meta["cue"]["kind"] == "background"
    assert meta["cue"]["blend"] == BACKGROUND_CUE_BLEND and meta["cue"]["size_px"] is None
    assert meta["cue"]["mapping"] == cue_mapping(config)
    for d, domain in enumerate(config.domains):
        for path in sorted((out / "images" / domain).rglob("*.png")):
            scene = render_scene(config, 2, d, int(path.stem))
            rel = path.relative_to(out / "images")
            with Image.open(path) as im:
                assert np.array_equal(np.asarray(im), scene.image)
            with Image.open(out / "cues" / rel) as c, Image.open(out / "masks" / rel) as m:
                cue, obj = np.asarray(c) == 255, np.asarray(m) == 255
            assert np.array_equal(cue, ~obj) and obj.any()
    square = json.loads((generate(tmp_path / "sq", SMALL, seed=2) / "synth.json").read_text())
    assert square["config"]["cue_kind"] == "square" and square["cue"]["size_px"] == SMALL.cue_px


def test_dataset_matches_compares_the_whole_config(tmp_path):
    out = generate(tmp_path / "s", SMALL, seed=4)
    assert dataset_matches(out, SMALL, 4)
    assert not dataset_matches(out, SMALL, 5)
    assert not dataset_matches(out, dataclasses.replace(SMALL, cue_kind="background"), 4)
    assert not dataset_matches(out, dataclasses.replace(SMALL, cue_strength=0.5), 4)
    assert not dataset_matches(tmp_path / "missing", SMALL, 4)
    meta = json.loads((out / "synth.json").read_text())
    del meta["config"]["cue_kind"]  # written before cue kinds existed: a square cue
    (out / "synth.json").write_text(json.dumps(meta))
    assert dataset_matches(out, SMALL, 4)
    assert not dataset_matches(out, dataclasses.replace(SMALL, cue_kind="background"), 4)
    meta["config"]["halo"] = 1  # a field this version does not know
    (out / "synth.json").write_text(json.dumps(meta))
    assert not dataset_matches(out, SMALL, 4)


def test_ensure_data_regenerates_a_dataset_of_another_cue_kind(tmp_path):
    import io

    from rich.console import Console

    from align.quickstart import ensure_data

    console = Console(file=io.StringIO())
    root = generate(tmp_path / "data", dataclasses.replace(SMALL, cue_kind="background"), seed=0)
    ensure_data(root, 0, console, config=SMALL)
    assert json.loads((root / "synth.json").read_text())["config"]["cue_kind"] == "square"
    before = _files(root)
    ensure_data(root, 0, console, config=SMALL)  # now it matches: reused as it is
    assert _files(root) == before and "using" in console.file.getvalue()


def test_cue_mapping_differs_across_domains():
    mapping = cue_mapping(DEFAULT_CONFIG)
    names = [n for n, _ in CUE_COLORS[:4]]
    for d, domain in enumerate(DEFAULT_CONFIG.domains):
        for k, cls in enumerate(DEFAULT_CONFIG.classes):
            assert mapping[domain][cls] == names[(k + d) % 4]
        assert sorted(mapping[domain].values()) == sorted(names)  # a permutation
    domains = DEFAULT_CONFIG.domains
    for a in range(4):
        for b in range(a + 1, 4):  # every class's cue changes between any two domains
            assert all(mapping[domains[a]][c] != mapping[domains[b]][c]
                       for c in DEFAULT_CONFIG.classes)


# --- domain styles ---------------------------------------------------------------------

def _style_stats(d: int) -> tuple[float, float, float]:
    """(background brightness, background local variation, pixel-noise std) over 30 scenes."""
    bright, variation, noise = [], [], []
    for i in range(30):
        clean = render_scene(_quiet(DEFAULT_CONFIG), 0, d, i)
        noisy = render_scene(DEFAULT_CONFIG, 0, d, i)
        bg = ~(synth._dilate(clean.mask, 2) | _cue_mask(clean))
        img = clean.image.astype(float)
        bright.append(img[bg].mean())
        dx = np.abs(np.diff(img, axis=1)).sum(2)
        variation.append(dx[bg[:, 1:] & bg[:, :-1]].mean())
        noise.append((noisy.image.astype(float) - img)[bg].std())
    return float(np.mean(bright)), float(np.mean(variation)), float(np.mean(noise))


def test_domain_styles_differ_measurably():
    stats = {name: _style_stats(d) for d, name in enumerate(DEFAULT_CONFIG.domains)}
    assert stats["sketch"][0] > 200 > stats["photo"][0] > stats["noisy"][0]  # paper, mid, dark
    assert stats["noisy"][2] > 3 * max(stats[n][2] for n in ("photo", "sketch", "texture"))
    assert stats["texture"][1] > 3 * stats["photo"][1]  # checks vs a smooth gradient
    assert stats["sketch"][1] > 3 * stats["photo"][1]  # hatching vs a smooth gradient
    names = list(stats)
    for a in range(4):
        for b in range(a + 1, 4):
            gap = np.abs(np.subtract(stats[names[a]], stats[names[b]])).max()
            assert gap > 10, (names[a], names[b], stats)


# --- generate: layout, determinism, atomicity --------------------------------------------

def test_layout_counts_and_round_trip(tmp_path):
    out = generate(tmp_path / "synth", SMALL, seed=3)
    assert out == tmp_path / "synth"
    meta = json.loads((out / "synth.json").read_text())
    assert meta["seed"] == 3 and meta["version"] == synth.SYNTH_VERSION
    assert meta["config"]["n_per_domain"] == 8 and meta["cue"]["mapping"] == cue_mapping(SMALL)
    for d, domain in enumerate(SMALL.domains):
        assert meta["counts"][domain] == {k: 2 for k in SMALL.classes}
        for k in SMALL.classes:
            images = sorted((out / "images" / domain / k).iterdir())
            masks = sorted((out / "masks" / domain / k).iterdir())
            assert [p.name for p in images] == [p.name for p in masks] and len(images) == 2
            for path in images:
                img, mask, label = render(SMALL, 3, d, int(path.stem))
                assert SMALL.classes[label] == k
                with Image.open(path) as im:
                    assert im.mode == "RGB" and np.array_equal(np.asarray(im), img)
                with Image.open(out / "masks" / domain / k / path.name) as m:
                    arr = np.asarray(m)
                    assert m.mode == "L" and set(np.unique(arr)) == {0, 255}
                    assert np.array_equal(arr == 255, mask)
                scene = synth.render_scene(SMALL, 3, d, int(path.stem))
                with Image.open(out / "cues" / domain / k / path.name) as c:
                    cue = np.asarray(c) == 255
                # exactly the cue square the scene drew: its side, off the object
                assert np.array_equal(cue, _cue_mask(scene)) and cue.sum() == SMALL.cue_px ** 2
                assert not (cue & mask).any()


def test_classes_stay_balanced_when_n_does_not_divide(tmp_path):
    out = generate(tmp_path / "s", SynthConfig(size=16, n_per_domain=10), seed=0)
    counts = json.loads((out / "synth.json").read_text())["counts"]
    for per_class in counts.values():
        assert sum(per_class.values()) == 10 and max(per_class.values()) - min(per_class.values()) <= 1


def test_same_seed_same_bytes_and_partial_runs_agree(tmp_path):
    a = _files(generate(tmp_path / "a", SMALL, seed=5))
    b = _files(generate(tmp_path / "b", SMALL, seed=5))
    assert a == b
    c = _files(generate(tmp_path / "c", SMALL, seed=6))
    assert a.keys() == c.keys()
    assert sum(a[f] != c[f] for f in a if f.startswith("images/")) == 4 * 8
    part = _files(generate(tmp_path / "p", dataclasses.replace(SMALL, n_per_domain=4), seed=5))
    assert all(part[f] == a[f] for f in part if f != "synth.json")


def test_progress_reports_every_scene(tmp_path):
    calls = []
    generate(tmp_path / "s", SMALL, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 32) for i in range(1, 33)]


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "synth"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(out, SMALL)
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    # Regression (issue 10): --overwrite used to delete any folder; a user's folder is kept.
    with pytest.raises(FileExistsError, match="not a synthetic benchmark"):
        generate(out, SMALL, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    ours = tmp_path / "ours"
    generate(ours, SMALL, seed=1)
    generate(ours, SMALL, seed=2, overwrite=True)  # a dataset it made: replaced
    assert json.loads((ours / "synth.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "synth"]  # no temporaries


def test_commands_never_replace_a_data_folder_they_did_not_make(tmp_path):
    """`align quickstart|benchmark --out D` regenerate D/data only if it is their benchmark."""
    from rich.console import Console

    from align.quickstart import ensure_data

    data = tmp_path / "data"
    (data / "VOC2007").mkdir(parents=True)
    (data / "notes.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match=str(data)):
        ensure_data(data, 0, Console(quiet=True), SMALL)
    assert (data / "notes.txt").read_text() == "my notes" and (data / "VOC2007").is_dir()


def test_empty_existing_directory_is_fine(tmp_path):
    (tmp_path / "synth").mkdir()
    assert (generate(tmp_path / "synth", SMALL) / "synth.json").is_file()


def test_a_file_in_the_way_is_an_error(tmp_path):
    (tmp_path / "synth").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        generate(tmp_path / "synth", SMALL, overwrite=True)


def _failing_saver(monkeypatch, after: int) -> None:
    real, calls = synth._save_png, [0]

    def save(path, array):
        calls[0] += 1
        if calls[0] > after:
            raise OSError("disk full (simulated)")
        real(path, array)

    monkeypatch.setattr(synth, "_save_png", save)


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    _failing_saver(monkeypatch, after=5)
    with pytest.raises(OSError, match="simulated"):
        generate(tmp_path / "synth", SMALL)
    assert list(tmp_path.iterdir()) == []


def test_failure_during_overwrite_keeps_the_old_dataset(tmp_path, monkeypatch):
    out = generate(tmp_path / "synth", SMALL, seed=1)
    before = _files(out)
    _failing_saver(monkeypatch, after=10)
    with pytest.raises(OSError, match="simulated"):
        generate(out, SMALL, seed=2, overwrite=True)
    assert _files(out) == before and [p.name for p in tmp_path.iterdir()] == ["synth"]


def test_interrupt_cleans_up(tmp_path):
    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "synth", SMALL, progress=stop)
    assert list(tmp_path.iterdir()) == []


# --- validation --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    (dict(size=8), "size"),
    (dict(size=32.0), "size"),
    (dict(size=True), "size"),
    (dict(n_per_domain=3), "n_per_domain"),
    (dict(cue_strength=1.5), "cue_strength"),
    (dict(cue_strength=-0.1), "cue_strength"),
    (dict(cue_strength=float("nan")), "cue_strength"),
    (dict(cue_frac=0.5), "cue_frac"),
    (dict(noise_scale=-1.0), "noise_scale"),
    (dict(domains=("photo", "watercolour")), "domains"),
    (dict(domains="photo"), "domains"),
    (dict(domains=("photo", "photo")), "domains"),
    (dict(classes=("circle", "hexagon")), "classes"),
    (dict(classes=("circle", "square", "triangle")), "domains"),  # 4 domains, only 3 cues
    (dict(cue_kind="halo"), "cue_kind"),
    (dict(cue_kind=None), "cue_kind"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"SynthConfig\.{field}"):
        SynthConfig(**kwargs)


def test_config_accepts_lists_and_numpy_numbers():
    c = SynthConfig(domains=["photo", "noisy"], classes=["ring", "star"], size=np.int64(32))
    assert c.domains == ("photo", "noisy") and c.classes == ("ring", "star")
    assert type(c.size) is int and hash(c) == hash(SynthConfig(domains=("photo", "noisy"),
                                                               classes=("ring", "star"), size=32))


def test_bad_seed_or_index_is_refused(tmp_path):
    for args in [(-1, 0, 0), (0, 4, 0), (0, 0, -1), (1.5, 0, 0)]:
        with pytest.raises(ValueError):
            render(SMALL, *args)
    with pytest.raises(ValueError, match="seed"):
        generate(tmp_path / "s", SMALL, seed=-1)
    with pytest.raises(TypeError, match="SynthConfig"):
        generate(tmp_path / "s", {"size": 32})
    assert list(tmp_path.iterdir()) == []


def test_generated_folder_has_the_permissions_of_a_plain_mkdir(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    expected = plain.stat().st_mode & 0o777  # e.g. 0o755 under umask 022
    if expected == 0o700:
        pytest.skip("umask 077: a private temp folder would look the same")
    out = generate(tmp_path / "synth", SMALL, seed=0)
    assert out.stat().st_mode & 0o777 == expected  # not mkdtemp's 0o700
