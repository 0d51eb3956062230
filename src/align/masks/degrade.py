"""Ground-truth masks made worse on purpose, to study how mask quality affects training.

Four degradations, each with one scalar `level` (0 = untouched) under which the result gets
monotonically worse, so that a target IoU can be hit by bisection (`degrade_to_iou`):

* ``dilate``: grow by a Euclidean disk of radius `level` pixels (real-valued). Over-covers.
* ``erode``: shrink by a disk of radius `level`. Under-covers; the image border counts as object,
  so a mask touching the edge is not eaten from the edge (the object continues out of frame).
* ``shift``: translate `level` pixels in a direction drawn from the seed, zero-filled (content
  moved out of frame is lost). Mislocalises. `shift_mask` takes an explicit (dx, dy).
* ``blobs``: remove the fraction `level` (0..1) of the object in blob-shaped pieces and add as
  many false-positive pixels in blob-shaped pieces of background. With n object pixels and
  k = round(level * n), IoU = (n - k) / (n + k) exactly (while the background has room).

Disks are applied through `align.maps.DiscDilation`, a Euclidean distance transform computed
once per mask: exact for the disk {x^2 + y^2 <= r^2} (the same set as
``skimage.morphology.disk(r)``), valid for non-integer radii, and the same cost for any r, which
makes trying 40 radii during the IoU search cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import math
from typing import Any

import numpy as np
from scipy import ndimage

from align.maps import DiscDilation
from align.masks.quality import binarize, mask_iou
from align.registry import Registry

# Blob size: smoothing of the random field as a fraction of the shorter image side. 0.1 gives
# a few solid blobs per image; smaller values fray the edges into speckle.
_BLOB_SIGMA_FRACTION = 0.1

DEGRADATIONS: Registry[type] = Registry("mask degradation")


def _check_radius(level: float, kind: str) -> float:
    level = float(level)
    if not math.isfinite(level) or level < 0:
        raise ValueError(f"{kind} level must be a finite radius >= 0 pixels, got {level}")
    return level


def dilate_mask(mask: Any, radius: float) -> np.ndarray:
    """Binary dilation by the disk of `radius` pixels (bool result)."""
    return _Dilate(binarize(mask), None).apply(radius)


def erode_mask(mask: Any, radius: float) -> np.ndarray:
    """Binary erosion by the disk of `radius` pixels; outside the image counts as object."""
    return _Erode(binarize(mask), None).apply(radius)


def shift_mask(mask: Any, dx: int, dy: int) -> np.ndarray:
    """Translate by `dx` pixels right and `dy` pixels down (negative: left/up), zero-filled."""
    m = binarize(mask)
    if int(dx) != dx or int(dy) != dy:
        raise ValueError(f"shift must be whole pixels, got dx={dx}, dy={dy}")
    dx, dy = int(dx), int(dy)
    h, w = m.shape
    out = np.zeros_like(m)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    src = m[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


class _Degrader(ABC):
    """A degradation prepared for one mask, so many levels can be tried cheaply.

    Subclasses set `max_level`: the level at which the degradation has done all it can (IoU no
    longer falls), used as the upper end of the IoU search.
    """

    max_level: float

    def __init__(self, mask: np.ndarray, rng: np.random.Generator | None) -> None:
        if mask.ndim != 2:
            raise ValueError(f"masks must be 2-D (H, W), got shape {mask.shape}")
        self.mask = mask

    @abstractmethod
    def apply(self, level: float) -> np.ndarray:
        """The mask degraded at `level`."""


@DEGRADATIONS.register("dilate")
class _Dilate(_Degrader):
    def __init__(self, mask: np.ndarray, rng: np.random.Generator | None) -> None:
        super().__init__(mask, rng)
        self.max_level = float(math.hypot(*mask.shape))
        self.dilate = DiscDilation(mask)

    def apply(self, level: float) -> np.ndarray:
        return self.dilate(_check_radius(level, "dilate"))


@DEGRADATIONS.register("erode")
class _Erode(_Degrader):
    def __init__(self, mask: np.ndarray, rng: np.random.Generator | None) -> None:
        super().__init__(mask, rng)
        # Erosion is the complement of the background's dilation. Only background pixels inside
        # the image grow, so the border acts as object; a full mask has no background to grow.
        self.dilate_background = DiscDilation(~mask)
        dist = self.dilate_background.distance
        self.max_level = float(dist.max()) if dist is not None else 0.0

    def apply(self, level: float) -> np.ndarray:
        return ~self.dilate_background(_check_radius(level, "erode"))


@DEGRADATIONS.register("shift")
class _Shift(_Degrader):
    def __init__(self, mask: np.ndarray, rng: np.random.Generator | None) -> None:
        super().__init__(mask, rng)
        # One direction per mask: the search then moves along a ray, so IoU falls steadily.
        self.angle = float(rng.uniform(0.0, 2.0 * math.pi)) if rng is not None else 0.0
        self.max_level = float(math.hypot(*mask.shape))

    def apply(self, level: float) -> np.ndarray:
        level = _check_radius(level, "shift")
        dx = int(round(level * math.cos(self.angle)))
        dy = int(round(level * math.sin(self.angle)))
        return shift_mask(self.mask, dx, dy)


@DEGRADATIONS.register("blobs")
class _Blobs(_Degrader):
    max_level = 1.0

    def __init__(self, mask: np.ndarray, rng: np.random.Generator | None) -> None:
        super().__init__(mask, rng)
        rng = rng if rng is not None else np.random.default_rng(0)
        sigma = max(1.0, _BLOB_SIGMA_FRACTION * min(mask.shape))
        # The lowest values of a smooth random field sit in blobs around its minima, so taking
        # pixels in rank order removes/adds whole blobs, and a higher level takes a superset.
        remove_field = ndimage.gaussian_filter(rng.standard_normal(mask.shape), sigma).ravel()
        add_field = ndimage.gaussian_filter(rng.standard_normal(mask.shape), sigma).ravel()
        fg, bg = np.flatnonzero(mask), np.flatnonzero(~mask)
        self.remove_order = fg[np.argsort(remove_field[fg], kind="stable")]
        self.add_order = bg[np.argsort(add_field[bg], kind="stable")]

    def apply(self, level: float) -> np.ndarray:
        level = float(level)
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"blobs level is a fraction of the object in [0, 1], got {level}")
        k = int(round(level * self.remove_order.size))
        out = self.mask.copy().ravel()
        out[self.remove_order[:k]] = False
        out[self.add_order[: min(k, self.add_order.size)]] = True
        return out.reshape(self.mask.shape)


def make_degrader(mask: Any, kind: str, seed: int = 0) -> _Degrader:
    """Prepare degradation `kind` (one of ``DEGRADATIONS.names()``) for `mask`."""
    cls = DEGRADATIONS.get(kind)
    return cls(binarize(mask), np.random.default_rng(int(seed)))


def degrade_mask(mask: Any, kind: str, level: float, seed: int = 0) -> np.ndarray:
    """Degrade `mask` by `kind` at `level`; random choices (direction, blobs) come from `seed`."""
    return make_degrader(mask, kind, seed).apply(level)


def search_level(
    mask: Any, target_iou: float, kind: str, seed: int = 0, *, tol: float = 0.005,
    max_iter: int = 40,
) -> tuple[np.ndarray, float, float]:
    """Like `degrade_to_iou` but also returns the level found: (mask, iou, level)."""
    target_iou = float(target_iou)
    if not 0.0 <= target_iou <= 1.0:
        raise ValueError(f"target IoU must lie in [0, 1], got {target_iou}")
    deg = make_degrader(mask, kind, seed)
    truth = deg.mask
    best: tuple[np.ndarray, float, float] = (truth.copy(), 1.0, 0.0)

    def consider(level: float) -> float:
        nonlocal best
        out = deg.apply(level)
        iou = mask_iou(out, truth)
        if abs(iou - target_iou) < abs(best[1] - target_iou):
            best = (out, iou, level)
        return iou

    if abs(1.0 - target_iou) <= tol or consider(deg.max_level) >= target_iou:
        # Either untouched is close enough, or even the strongest level stays above the target
        # (e.g. dilating an object that fills most of the image): return the closest we have.
        return best
    lo, hi = 0.0, deg.max_level
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        iou = consider(mid)
        if abs(iou - target_iou) <= tol:
            break
        lo, hi = (mid, hi) if iou > target_iou else (lo, mid)
    return best


def degrade_to_iou(
    mask: Any, target_iou: float, kind: str, seed: int = 0, *, tol: float = 0.005
) -> tuple[np.ndarray, float]:
    """Degrade `mask` by `kind` to the level whose IoU with `mask` is closest to `target_iou`.

    Bisection over the level (IoU falls as the level rises; for ``shift`` nearly so), stopping
    once within `tol`. IoU moves in pixel-sized steps, so on tiny masks the closest achievable
    value may be further than `tol`; when the target is below what the degradation can reach
    (dilating a mask that already fills most of the image) the strongest level is returned.
    The achieved IoU is always returned alongside the mask (bool array).
    """
    out, iou, _ = search_level(mask, target_iou, kind, seed, tol=tol)
    return out, iou
