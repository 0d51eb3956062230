"""Built-in synthetic benchmark: drawn shapes on styled backgrounds, plus a misleading cue.

A scene is one filled shape (its class) on a background styled by its domain, plus a *cue*
of one of K colours. With ``cue_kind="square"`` (the default) the cue is a small saturated
square in the background, never touching the shape; with ``cue_kind="background"`` it is a
tint of the whole background (as a camera location or a habitat colours a photo). In domain
``d`` a class-``k`` scene gets cue colour ``(k + d) mod K`` with probability ``cue_strength``
(else a uniformly random one), so a model that reads the cue fails on a held-out domain,
while the exact object mask says where the real evidence is. Output (DomainBed layout)::

    OUT/images/<domain>/<class>/<NNNNN>.png   RGB
    OUT/masks/<domain>/<class>/<NNNNN>.png    mode "L", 0 or 255, exactly the object
    OUT/cues/<domain>/<class>/<NNNNN>.png     mode "L", 0 or 255, exactly the pixels the cue
                                              changed (the square, or all but the object)
    OUT/synth.json                            parameters, seed, counts, cue mapping

Each scene has its own generator seeded by ``(seed, domain_index, index)``, so one scene, a
partial run and a full run agree byte for byte. See ``docs/synthetic.md``.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from align import __version__
from align.data.synthetic_draw import background as _background
from align.data.synthetic_draw import dilate as _dilate
from align.data.synthetic_draw import object_colour, shape_mask
from align.data.synthetic_styles import CUE_COLORS, RGB, SHAPES, STYLES, DomainStyle  # noqa: F401
from align import io
from align.io import install_dir, temp_dir_beside, write_json

#: Bump whenever the same (config, seed) would give different bytes.
SYNTH_VERSION = 2  # 2: adds cues/ (images and masks unchanged from 1)

_PLACE_TRIES = 50  # object re-draws allowed when no room is left for the cue

#: Where the cue goes: a compact square beside the object, or a tint over all of the background.
CUE_KINDS: tuple[str, ...] = ("square", "background")
#: Background cue: weight of the cue colour in the blend `(1 - a) * background + a * colour`.
#: Fixed before any method was compared; the reasons are in docs/synthetic.md.
BACKGROUND_CUE_BLEND = 0.4


def _fail(name: str, message: str) -> None:
    raise ValueError(f"SynthConfig.{name}: {message}")


@dataclass(frozen=True)
class SynthConfig:
    """Generation parameters. Defaults are the benchmark and are fixed before any comparison."""

    size: int = 64
    n_per_domain: int = 500
    domains: tuple[str, ...] = ("photo", "sketch", "noisy", "texture")
    classes: tuple[str, ...] = ("circle", "square", "triangle", "cross")
    cue_strength: float = 0.9
    cue_frac: float = 0.14  # side of the cue square, as a fraction of size
    noise_scale: float = 1.0  # multiplies every domain's noise_std (0 = noise-free)
    cue_kind: str = "square"  # "square" | "background" (CUE_KINDS)

    def __post_init__(self) -> None:
        # Accept lists (e.g. from YAML or the CLI) but store tuples so the config stays hashable.
        object.__setattr__(self, "domains", _names("domains", self.domains))
        object.__setattr__(self, "classes", _names("classes", self.classes))
        _validate(self)
        for field, cast in (("size", int), ("n_per_domain", int), ("cue_strength", float),
                            ("cue_frac", float), ("noise_scale", float)):
            object.__setattr__(self, field, cast(getattr(self, field)))  # numpy -> plain, for JSON

    @property
    def n_cues(self) -> int:
        """K: one cue colour per class, so each domain's class->cue mapping is a permutation."""
        return len(self.classes)

    @property
    def cue_px(self) -> int:
        return max(2, round(self.cue_frac * self.size))

    @property
    def margin_px(self) -> int:
        """Gap kept between the object and the cue, so the cue never touches the shape."""
        return max(1, round(self.size / 32))


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _names(field: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        # tuple("photo") would silently become five letters
        _fail(field, f"must be a sequence of names, got {value!r}")
    return tuple(value)


def _validate(c: SynthConfig) -> None:
    for field, names, known in (("domains", c.domains, STYLES), ("classes", c.classes, SHAPES)):
        if len(names) < 2 or len(set(names)) != len(names):
            _fail(field, f"need at least 2 distinct names, got {names!r}")
        unknown = [x for x in names if x not in known]
        if unknown:
            _fail(field, f"unknown {unknown}; choose from {list(known)}")
    if c.cue_kind not in CUE_KINDS:
        _fail("cue_kind", f"must be one of {list(CUE_KINDS)}, got {c.cue_kind!r}")
    if len(c.domains) > len(c.classes):  # domains d and d + K would share one cue mapping
        _fail("domains", f"{len(c.domains)} domains need at least as many classes (got "
                         f"{len(c.classes)}) so that every domain's cue mapping differs")
    ranges = (("size", c.size, 16, 1024, True),
              ("n_per_domain", c.n_per_domain, len(c.classes), 99_999, True),  # >= 1 per class
              ("cue_strength", c.cue_strength, 0.0, 1.0, False),
              ("cue_frac", c.cue_frac, 0.02, 0.25, False),
              ("noise_scale", c.noise_scale, 0.0, 10.0, False))
    for field, value, lo, hi, integer in ranges:
        if not (_is_int(value) if integer else _is_number(value)) or not lo <= value <= hi:
            kind = "an integer" if integer else "a number"
            _fail(field, f"must be {kind} in [{lo}, {hi}], got {value!r}")


DEFAULT_CONFIG = SynthConfig()


def cue_index(config: SynthConfig, domain_index: int, label: int) -> int:
    """The cue colour the class->cue mapping gives class `label` in domain `domain_index`."""
    return (label + domain_index) % config.n_cues


def cue_mapping(config: SynthConfig) -> dict[str, dict[str, str]]:
    """{domain: {class: cue colour name}} -- what `synth.json` records."""
    return {d: {k: CUE_COLORS[cue_index(config, di, ki)][0] for ki, k in enumerate(config.classes)}
            for di, d in enumerate(config.domains)}


@dataclass(frozen=True)
class Scene:
    """One rendered scene, with everything the tests and docs need to check it."""

    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # bool [H, W], exactly the object's pixels
    label: int
    cue: int  # index into CUE_COLORS of the cue drawn
    cue_agrees: bool  # cue == the domain's mapped cue for this label
    cue_box: tuple[int, int, int, int] | None  # y0, x0, y1, x1 (end-exclusive); None unless square
    object_color: RGB
    cue_mask: np.ndarray  # bool [H, W], exactly the pixels the cue changed


def _free_cue_positions(blocked: np.ndarray, side: int) -> np.ndarray:
    """Flat indices (over the (H-side+1)^2 grid of top-left corners) of windows clear of `blocked`."""
    integral = np.pad(blocked.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    s = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] \
        + integral[:-side, :-side]
    return np.flatnonzero(s == 0)


def _place_object(rng: np.random.Generator, config: SynthConfig, style: DomainStyle,
                  shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Draw size, position and rotation until the cue has somewhere to go; (mask, free cue spots)."""
    size = config.size
    for _ in range(_PLACE_TRIES):
        r = rng.uniform(*style.scale_range) * size
        cy, cx = rng.uniform(r + 1, size - 1 - r, 2)  # the whole disc of radius r fits
        theta = rng.uniform(0, 2 * math.pi)
        mask = shape_mask(shape, size, cy, cx, r, theta)
        free = _free_cue_positions(_dilate(mask, config.margin_px), config.cue_px)
        if mask.any() and free.size:
            return mask, free
    raise RuntimeError(f"could not fit a {config.cue_px}px cue beside a {shape} in "
                       f"{_PLACE_TRIES} tries; lower cue_frac")


def _check_seed(seed: object) -> None:
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def render_scene(config: SynthConfig, seed: int, domain_index: int, index: int) -> Scene:
    """Render scene `index` of domain `config.domains[domain_index]`, entirely in memory.

    All random draws happen in a fixed order whatever the settings, so changing
    `cue_strength` changes only cue colours, `noise_scale` only the noise, and `cue_kind`
    only how the cue is drawn (the same object, background, cue colour and noise).
    """
    _check_seed(seed)
    if not _is_int(domain_index) or not 0 <= domain_index < len(config.domains):
        raise ValueError(f"domain_index must be in [0, {len(config.domains)}), got {domain_index!r}")
    if not _is_int(index) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    style = STYLES[config.domains[domain_index]]
    label = int(index % len(config.classes))  # round-robin keeps every domain balanced
    rng = np.random.default_rng([seed, domain_index, index])

    bg = _background(rng, style, config.size)
    mask, free = _place_object(rng, config, style, config.classes[label])
    # The object must stand out from the background around it. With a background cue, from
    # that background under each of the K tints: still a choice by background alone, never by
    # cue (which follows the class).
    refs = bg[_dilate(mask, config.margin_px) & ~mask].mean(axis=0)[None]  # [1, 3]
    if config.cue_kind == "background":
        tints = np.array([rgb for _, rgb in CUE_COLORS[:config.n_cues]], dtype=np.float64)
        refs = (1 - BACKGROUND_CUE_BLEND) * refs + BACKGROUND_CUE_BLEND * tints  # [K, 3]
    colour = object_colour(rng, style, refs)

    mapped = cue_index(config, domain_index, label)
    agrees_draw, random_cue = rng.random(), int(rng.integers(config.n_cues))
    cue = mapped if agrees_draw < config.cue_strength else random_cue
    # Drawn for both kinds, so that a background-cue scene is its square-cue twin.
    y0, x0 = divmod(int(free[rng.integers(free.size)]), config.size - config.cue_px + 1)
    box = (y0, x0, y0 + config.cue_px, x0 + config.cue_px)

    img = bg.copy()
    img[mask] = colour
    if config.cue_kind == "square":
        cue_box: tuple[int, int, int, int] | None = box
        cue_mask = _box_mask(config.size, box) > 0
        img[cue_mask] = CUE_COLORS[cue][1]
    else:  # "background": tint everything but the object; the domain's pattern stays visible
        cue_box, cue_mask = None, ~mask
        tint = np.asarray(CUE_COLORS[cue][1], dtype=np.float64)
        img[cue_mask] = (1 - BACKGROUND_CUE_BLEND) * img[cue_mask] + BACKGROUND_CUE_BLEND * tint
    img += rng.standard_normal(img.shape) * (style.noise_std * config.noise_scale)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Scene(image, mask, label, cue, cue == mapped, cue_box,
                 tuple(int(v) for v in colour), cue_mask)


def render(config: SynthConfig, seed: int, domain_index: int,
           index: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(image uint8 [H, W, 3], object mask bool [H, W], label) -- exactly what `generate` writes."""
    scene = render_scene(config, seed, domain_index, index)
    return scene.image, scene.mask, scene.label


def _save_png(path: Path, array: np.ndarray) -> None:
    """Write one PNG. A module-level function so tests can make it fail mid-run."""
    Image.fromarray(array).save(path, format="PNG")


def made_by_generate(out_dir: str | Path) -> bool:
    """Whether `out_dir` is a dataset this generator wrote: its `synth.json` is the marker
    (`"format": "align-synth"`), whatever its version or settings."""
    meta = Path(out_dir) / "synth.json"
    try:
        return io.read_json(meta).get("format") == "align-synth"
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(out: Path, overwrite: bool) -> None:
    """A non-empty `out` is replaced only with `overwrite` and only if this generator made it:
    a folder of anything else (a user's images, notes) is never deleted."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a directory")
        if not any(out.iterdir()):
            return
        if not made_by_generate(out):
            raise FileExistsError(
                f"{out} exists, is not empty and is not a synthetic benchmark made by `align "
                "synth` (no synth.json marker): it is left untouched; choose another folder")
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True "
                                  "(--overwrite) to replace it")


def _write_scenes(root: Path, config: SynthConfig, seed: int,
                  progress: Callable[[int, int], None] | None) -> dict:
    """Render and save every scene under `root`; returns the counts for synth.json."""
    total, done = len(config.domains) * config.n_per_domain, 0
    counts = {d: {k: 0 for k in config.classes} for d in config.domains}
    agree = {d: 0 for d in config.domains}
    for d, domain in enumerate(config.domains):
        for part in ("images", "masks", "cues"):
            for k in config.classes:
                (root / part / domain / k).mkdir(parents=True)
        for i in range(config.n_per_domain):
            scene = render_scene(config, seed, d, i)
            k = config.classes[scene.label]
            name = f"{i:05d}.png"
            _save_png(root / "images" / domain / k / name, scene.image)
            _save_png(root / "masks" / domain / k / name, scene.mask.astype(np.uint8) * 255)
            # The shortcut's own mask, so that explanations can be scored on it (shortcut use).
            _save_png(root / "cues" / domain / k / name, scene.cue_mask.astype(np.uint8) * 255)
            counts[domain][k] += 1
            agree[domain] += scene.cue_agrees
            done += 1
            if progress is not None:
                progress(done, total)
    return {"counts": counts, "cue_agreement": {d: agree[d] / config.n_per_domain for d in agree}}


def _box_mask(size: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 [size, size]: 255 inside the end-exclusive box (y0, x0, y1, x1), 0 elsewhere."""
    y0, x0, y1, x1 = box
    out = np.zeros((size, size), np.uint8)
    out[y0:y1, x0:x1] = 255
    return out


def _metadata(config: SynthConfig, seed: int, stats: dict) -> dict:
    """Everything needed to regenerate and to interpret the dataset; no timestamps, so the
    file is as reproducible as the images."""
    k, p = config.n_cues, config.cue_strength
    cue = {"kind": config.cue_kind,
           "rule": "cue(k, d) = (k + d) mod K with probability cue_strength, else uniform",
           "K": k, "colors": {name: list(rgb) for name, rgb in CUE_COLORS[:k]},
           "size_px": config.cue_px, "mapping": cue_mapping(config),
           "expected_agreement": p + (1 - p) / k}
    if config.cue_kind == "background":
        cue.update(size_px=None, region="every pixel that is not the object",
                   blend=BACKGROUND_CUE_BLEND,
                   formula="(1 - blend) * domain background + blend * cue colour, then noise")
    return {"format": "align-synth", "version": SYNTH_VERSION, "align_version": __version__,
            "seed": seed, "config": asdict(config),
            "styles": {d: asdict(STYLES[d]) for d in config.domains}, "cue": cue, **stats}


def generate(out_dir: str | Path, config: SynthConfig = DEFAULT_CONFIG, seed: int = 0,
             overwrite: bool = False,
             progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the benchmark to `out_dir` and return it.

    The dataset is built in a hidden sibling directory and renamed into place only when
    complete, so `out_dir` is either absent, the old dataset, or the whole new one. A
    non-empty `out_dir` is an error unless `overwrite`. `progress(done, total)` is called
    after each scene.
    """
    if not isinstance(config, SynthConfig):
        raise TypeError(f"config must be a SynthConfig, got {type(config).__name__}")
    _check_seed(seed)
    seed, out = int(seed), Path(out_dir)
    _check_target(out, overwrite)
    tmp = temp_dir_beside(out)
    try:
        stats = _write_scenes(tmp, config, seed, progress)
        write_json(tmp / "synth.json", _metadata(config, seed, stats))
        _check_target(out, overwrite)  # again: something may have appeared while we worked
        install_dir(tmp, out)
    finally:
        if tmp.exists():  # only on failure: on success it has become `out`
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def dataset_matches(out_dir: str | Path, config: SynthConfig, seed: int) -> bool:
    """Whether `out_dir` holds a dataset of this generator version made from exactly `config`
    and `seed`, according to its `synth.json`: the check a cache needs before reusing it.

    Every field of the configuration counts, so a background-cue dataset is never taken for the
    default one. A `synth.json` written before `cue_kind` existed has the square cue, which is
    what the missing field defaults to. A configuration this version cannot read is no match.
    """
    meta = Path(out_dir) / "synth.json"
    if not meta.is_file():
        return False
    found = io.read_json(meta)  # a corrupt synth.json is an error naming it, not "no match"
    if found.get("version") != SYNTH_VERSION or found.get("seed") != seed:
        return False
    try:
        return SynthConfig(**found.get("config", {})) == config
    except (TypeError, ValueError):  # a field this version does not know, or an invalid value
        return False
