"""The upstream task: what ImageNet is to VLCS, for the synthetic benchmark.

Many shape classes (12 by default), none of them a benchmark class, on backgrounds in a broad
mix of styles (the benchmark's four domain styles and two more), with no spurious cue: the
shape is the only thing that tells the class. A backbone trained on it (`align pretrain`)
starts the benchmark with general shape features, as an ImageNet backbone starts VLCS or
TerraIncognita, while its classifier head is new. Rendered in memory; see docs/synthetic.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from align.data.synthetic_draw import background, dilate, object_colour, shape_mask
from align.data.synthetic_styles import SHAPES, STYLES, UPSTREAM_SHAPES, UPSTREAM_STYLES

#: Every style the upstream task may use: the benchmark's domains, then its own.
ALL_STYLES = {**STYLES, **UPSTREAM_STYLES}

#: Second word of every upstream scene's seed. The benchmark seeds scene i of domain d with
#: (seed, d, i), d < 6, so no upstream scene shares a generator with a benchmark scene.
_STREAM = 0x55505354  # "UPST"


def _fail(name: str, message: str) -> None:
    raise ValueError(f"UpstreamConfig.{name}: {message}")


@dataclass(frozen=True)
class UpstreamConfig:
    """The upstream data. Defaults fixed before any method was compared (docs/synthetic.md)."""

    classes: tuple[str, ...] = UPSTREAM_SHAPES
    styles: tuple[str, ...] = tuple(ALL_STYLES)
    n_train: int = 12000  # 1,000 per class: with fewer, a small CNN overfits within the budget
    n_val: int = 1200  # 100 per class, for the reported upstream accuracy

    def __post_init__(self) -> None:
        for field, known in (("classes", UPSTREAM_SHAPES), ("styles", ALL_STYLES)):
            names = getattr(self, field)
            if isinstance(names, str) or not hasattr(names, "__iter__"):
                _fail(field, f"must be a sequence of names, got {names!r}")
            names = tuple(names)
            object.__setattr__(self, field, names)
            if len(names) < (2 if field == "classes" else 1) or len(set(names)) != len(names):
                _fail(field, f"need distinct names, got {names!r}")
            unknown = [x for x in names if x not in known]
            if unknown:
                hint = " (benchmark classes cannot be upstream classes)" if set(unknown) & set(SHAPES) else ""
                _fail(field, f"unknown {unknown}{hint}; choose from {list(known)}")
        for field in ("n_train", "n_val"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or not len(self.classes) <= value <= 1_000_000:
                _fail(field, f"must be an integer in [{len(self.classes)}, 1000000], got {value!r}")
            object.__setattr__(self, field, int(value))


def render_upstream(config: UpstreamConfig, seed: int, index: int,
                    size: int) -> tuple[np.ndarray, int, str]:
    """(image uint8 [size, size, 3], label, style name) of upstream scene `index`.

    Scene `index` has class `index % n_classes` (balanced) and its own generator, seeded with
    (seed, a fixed stream number, index), so any subset of scenes renders the same. The
    training set is scenes 0 .. n_train-1 and the validation set the next n_val.
    """
    rng = np.random.default_rng([seed, _STREAM, index])
    label = index % len(config.classes)
    name = config.styles[int(rng.integers(len(config.styles)))]
    style = ALL_STYLES[name]
    bg = background(rng, style, size)
    r = rng.uniform(*style.scale_range) * size
    cy, cx = rng.uniform(r + 1, size - 1 - r, 2)  # the whole disc of radius r fits
    mask = shape_mask(config.classes[label], size, cy, cx, r, rng.uniform(0, 2 * math.pi))
    ring = dilate(mask, max(1, round(size / 32))) & ~mask
    colour = object_colour(rng, style, bg[ring].mean(axis=0)[None])
    img = bg.copy()
    img[mask] = colour
    img += rng.standard_normal(img.shape) * style.noise_std
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label, name


def render_upstream_set(config: UpstreamConfig, seed: int, start: int, n: int,
                        size: int) -> tuple[np.ndarray, np.ndarray]:
    """Scenes start .. start+n-1: (images uint8 [n, size, size, 3], labels int64 [n])."""
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    for j in range(n):
        images[j], labels[j], _ = render_upstream(config, seed, start + j, size)
    return images, labels
