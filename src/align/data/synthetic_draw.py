"""Drawing primitives shared by the synthetic benchmark and its upstream (pre-training) task.

Shapes are hard-edged masks on the grid of pixel centres, so a mask and the pixels drawn with
it coincide exactly. Backgrounds are float [H, W, 3] images in one style. Everything takes its
randomness from the caller's generator, in a fixed order, so the callers stay deterministic.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from align import maps
from align.data.synthetic_styles import SHAPES, UPSTREAM_SHAPES, DomainStyle

_COLOUR_TRIES = 8  # palette draws before settling for the most contrasting one
MIN_CONTRAST = 120.0  # L1 distance (sum over RGB) between object and nearby background


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x); cached and read-only since every scene shares them."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    ys.flags.writeable = False
    xs.flags.writeable = False
    return ys, xs


def _polygon(u: np.ndarray, v: np.ndarray, n: int, circumradius: float) -> np.ndarray:
    """Regular n-gon with a vertex on the +v axis: inside all n half-planes at the apothem."""
    apothem = circumradius * math.cos(math.pi / n)
    inside = np.ones_like(u, dtype=bool)
    for k in range(n):
        a = math.pi / 2 + math.pi / n + 2 * math.pi * k / n  # edge normals between vertices
        inside &= u * math.cos(a) + v * math.sin(a) <= apothem
    return inside


def _upstream_shape(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """The upstream task's shapes, in the rotated frame (u, v); each fits the disc of radius r.

    None is one of the benchmark's shapes or a rotation of one (the diamond is a rhombus
    with axes 0.95 r and 0.55 r, not a square), so the two label sets are disjoint.
    """
    au, av = np.abs(u), np.abs(v)
    if shape == "ellipse":
        return (u / (0.9 * r)) ** 2 + (v / (0.45 * r)) ** 2 <= 1
    if shape == "semicircle":
        return (u * u + v * v <= (0.9 * r) ** 2) & (v >= 0)
    if shape == "crescent":  # a disc minus a smaller disc shifted sideways
        return (u * u + v * v <= (0.9 * r) ** 2) & ((u - 0.4 * r) ** 2 + v * v > (0.75 * r) ** 2)
    if shape == "pentagon":
        return _polygon(u, v, 5, 0.9 * r)
    if shape == "hexagon":
        return _polygon(u, v, 6, 0.9 * r)
    if shape == "diamond":
        return au / (0.95 * r) + av / (0.55 * r) <= 1
    if shape == "arrow":  # a shaft and a triangular head pointing to +u
        shaft = (u >= -0.9 * r) & (u <= 0.1 * r) & (av <= 0.2 * r)
        head = (u >= 0.1 * r) & (av <= 0.55 * (0.9 * r - u) / 0.8)
        return shaft | head
    if shape == "tee":  # a bar on top of a stem
        bar = (au <= 0.7 * r) & (v >= 0.25 * r) & (v <= 0.6 * r)
        stem = (au <= 0.2 * r) & (v >= -0.85 * r) & (v < 0.25 * r)
        return bar | stem
    if shape == "ell":  # a long upright and a short foot to its right, at a right angle
        upright = (u >= -0.55 * r) & (u <= -0.2 * r) & (av <= 0.8 * r)
        foot = (u >= -0.55 * r) & (u <= 0.35 * r) & (v >= -0.8 * r) & (v <= -0.45 * r)
        return upright | foot
    if shape == "chevron":  # two equal arms meeting at about 127 degrees, pointing to +u
        w = u + 0.5 * av
        return (w >= -0.05 * r) & (w <= 0.4 * r) & (av <= 0.75 * r)
    if shape == "heart":  # two lobes over a downward point
        lobes = ((au - 0.33 * r) ** 2 + (v - 0.3 * r) ** 2) <= (0.38 * r) ** 2
        point = (v >= -0.85 * r) & (v <= 0.3 * r) & (au <= 0.71 * (v + 0.85 * r) / 1.15)
        return lobes | point
    if shape == "trapezoid":  # wide base at -v, narrow top at +v
        return (av <= 0.45 * r) & (au <= 0.85 * r - 0.4 * (v + 0.45 * r) / 0.9)
    raise ValueError(f"unknown shape {shape!r}; choose from {list(SHAPES + UPSTREAM_SHAPES)}")


def shape_mask(shape: str, size: int, cy: float, cx: float, r: float, theta: float) -> np.ndarray:
    """Hard-edged mask of a shape with circumradius `r` (so it fits a disc of radius r)."""
    ys, xs = grid(size)
    dx, dy = xs - cx, ys - cy
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy  # coordinates in the shape's rotated frame
    if shape == "circle":
        return dx * dx + dy * dy <= (0.9 * r) ** 2
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= r / math.sqrt(2)
    if shape == "triangle":  # equilateral: inside all three half-planes at distance r/2
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = math.pi / 2 + 2 * math.pi * k / 3
            inside &= u * math.cos(a) + v * math.sin(a) <= r / 2
        return inside
    if shape == "cross":  # union of two rectangles; arm tips' corners stay within r
        arm, half_w = 0.95 * r, 0.3 * r
        au, av = np.abs(u), np.abs(v)
        return ((au <= arm) & (av <= half_w)) | ((av <= arm) & (au <= half_w))
    if shape == "star":  # five points: fold the angle onto one edge tip->inner vertex
        sector = 2 * math.pi / 5
        m = np.mod(np.arctan2(v, u), sector)
        alpha = np.minimum(m, sector - m)
        rho = np.hypot(u, v)
        px, py = rho * np.cos(alpha), rho * np.sin(alpha)
        qx, qy = 0.45 * r * math.cos(sector / 2), 0.45 * r * math.sin(sector / 2)
        return (qx - r) * py - qy * (px - r) >= 0
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= (0.9 * r) ** 2) & (d2 >= (0.45 * r) ** 2)
    return _upstream_shape(shape, u, v, r)


def background(rng: np.random.Generator, style: DomainStyle, size: int) -> np.ndarray:
    """Float [H, W, 3] background in the style."""
    ys, xs = grid(size)
    lo, hi = style.bg_range
    kind = style.background
    if kind == "gradient":
        c0, c1 = rng.uniform(lo, hi, 3), rng.uniform(lo, hi, 3)
        a = rng.uniform(0, 2 * math.pi)
        t = xs * math.cos(a) + ys * math.sin(a)
        t = (t - t.min()) / (t.max() - t.min())
        return c0 + (c1 - c0) * t[..., None]
    if kind == "stripes":  # paper with thin pencil hatching
        paper = rng.uniform(lo, hi)
        ink = paper - rng.uniform(35, 60)
        period = rng.uniform(*style.period_range) * size
        a = rng.uniform(0, math.pi)
        lines = np.mod(xs * math.cos(a) + ys * math.sin(a), period) < max(1.0, size / 64)
        grey = np.where(lines, ink, paper)
        return grey[..., None] + np.array([0.0, -3.0, -10.0])  # warm paper tint
    if kind == "checker":
        c0 = rng.uniform(lo, hi, 3)
        c1 = c0 * rng.uniform(0.4, 0.6)  # a darker shade, so the checks are always visible
        cell = rng.uniform(*style.period_range) * size
        a = rng.uniform(0, math.pi / 2)
        u = xs * math.cos(a) + ys * math.sin(a)
        v = -xs * math.sin(a) + ys * math.cos(a)
        odd = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 1
        return np.where(odd[..., None], c1, c0)
    if kind == "speckle":
        base, dot = rng.uniform(lo, hi, 3), rng.uniform(lo, hi, 3)
        dots = rng.random((size, size)) < 0.2
        return np.where(dots[..., None], dot, base)
    if kind == "flat":  # one colour: a studio shot
        return np.broadcast_to(rng.uniform(lo, hi, 3), (size, size, 3)).copy()
    if kind == "blobs":  # a smooth random colour field: a 3x3 grid of colours, bilinear
        corners = rng.uniform(lo, hi, (3, 3, 3))
        t = np.linspace(0, 2, size)
        i = np.minimum(t.astype(int), 1)
        f = (t - i)[:, None]
        rows = corners[i] * (1 - f[..., None]) + corners[i + 1] * f[..., None]  # [size, 3, 3]
        return rows[:, i] * (1 - f[None]) + rows[:, i + 1] * f[None]
    raise ValueError(f"unknown background kind {kind!r}")


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """`align.maps.dilate` by the (2r+1)^2 square, on the bool (H, W) arrays the drawing uses."""
    return maps.dilate(torch.from_numpy(mask), r, shape="square").numpy()


def object_colour(rng: np.random.Generator, style: DomainStyle, refs: np.ndarray) -> np.ndarray:
    """A palette colour (never chosen by class) that stands out from every reference colour.

    `refs` [n, 3]: what the object must contrast with (the mean background around it, or that
    background under each possible tint). Up to 8 draws; the most contrasting one if none has
    an L1 distance of `MIN_CONTRAST` to its nearest reference.
    """
    best, best_contrast = None, -1.0
    for _ in range(_COLOUR_TRIES):
        base = np.asarray(style.palette[rng.integers(len(style.palette))], dtype=np.float64)
        colour = np.clip(base + rng.integers(-style.jitter, style.jitter + 1, 3), 0, 255)
        contrast = float(np.abs(colour - refs).sum(axis=1).min())
        if contrast >= MIN_CONTRAST:
            return colour
        if contrast > best_contrast:
            best, best_contrast = colour, contrast
    return best
