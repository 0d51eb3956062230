"""Primitives on masks and maps, defined once: IoU, dilation and min-max normalisation.

The metrics, the mask tools, the synthetic benchmark, Grad-CAM and the algorithms all call
these, so a mask or a map means the same thing everywhere. Where callers need different
conventions (what two empty masks score, when a map counts as constant) the caller states its
rule at the call, as an argument without a default.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

__all__ = ["DILATION_SHAPES", "DiscDilation", "dilate", "iou", "minmax"]

DILATION_SHAPES = ("disc", "square")
# Slack when comparing a distance (the square root of an integer) with a radius, so that a pixel
# at exactly the radius counts as inside whatever the rounding of the square root.
_EPS = 1e-6


def iou(a: Tensor, b: Tensor, *, empty: float) -> Tensor:
    """Intersection over union of two batches of boolean masks, one value per sample.

    Args:
        a, b: BoolTensor[B, ...] of one shape; each sample is reduced over all its other dims.
        empty: the score of a sample whose two masks are both empty (0 / 0). There is no
            default because callers differ: the mask tools score it 1.0 (both say "no object",
            full agreement), the metrics NaN (no object to find says nothing about the map).

    Returns:
        FloatTensor[B] (float64): |a & b| / |a | b|, `empty` where the union is empty. Counts are
        exact integers, so the float64 quotient rounds once, and a float32 copy of it equals a
        float32 division of the same counts.
    """
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dtype != torch.bool or b.dtype != torch.bool:
        raise TypeError(f"iou takes boolean masks, got {a.dtype} and {b.dtype}")
    if a.dim() < 1:
        raise ValueError("iou needs a batch dimension: masks of shape [B, ...]")
    size = (a.shape[0], math.prod(a.shape[1:]))  # [B, everything else], also for [B] and B = 0
    inter = (a & b).reshape(size).sum(dim=1).double()
    union = (a | b).reshape(size).sum(dim=1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, empty))


def minmax(maps: Tensor, *, eps: float) -> Tensor:
    """Per-sample min-max normalisation into [0, 1] that never produces NaN.

    Args:
        maps: FloatTensor[B, ...]; each sample is normalised over all its other entries, so
            [B, h, w] and [B, 1, h, w] give the same values.
        eps: a sample whose spread max - min is at most `eps` counts as constant (an all-zero
            Grad-CAM included) and becomes all zeros, with zero gradient. Grad-CAM inside a loss
            uses 1e-8: dividing by a tiny spread would scale the gradient by its inverse. The
            localisation metrics use 0: any spread is information.

    Returns:
        Tensor of the shape of `maps`: (m - min) / (max - min), exactly 0 at each informative
        sample's minimum and exactly 1 at its maximum. Its dtype is `maps`'s, except that
        float16 and bfloat16 maps (from mixed-precision training) are normalised in float32:
        their 8 or 11 significant bits would round a small spread, and `eps`, away.
    """
    if maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()
    flat = maps.flatten(1)
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo
    informative = span > eps
    # Double `where`: the unselected branch is still evaluated and back-propagated through (with
    # a zero incoming gradient), so it must itself be finite; dividing by 1 makes it so.
    safe_span = torch.where(informative, span, torch.ones_like(span))
    out = torch.where(informative, (flat - lo) / safe_span, torch.zeros_like(flat))
    return out.view_as(maps)


class DiscDilation:
    """Dilations of one mask by discs of any radius, from one Euclidean distance transform.

    `DiscDilation(mask)(r)` is every pixel within Euclidean distance r of the mask, i.e. the
    dilation by the disc {dx^2 + dy^2 <= r^2} (the same pixels as ``skimage.morphology.disk(r)``
    for an integer r), for any real r >= 0. The transform is computed once, so each radius then
    costs one comparison per pixel whatever its size: the mask-degradation search tries 40 radii
    up to the image diagonal, where a disc convolution would cost O(r^2) per pixel.

    Args:
        mask: bool array (H, W).

    Attributes:
        distance: float64 array (H, W), each pixel's distance to the nearest mask pixel (0 on
            the mask); None for an empty mask, which stays empty at every radius.
    """

    def __init__(self, mask: np.ndarray) -> None:
        if mask.dtype != np.bool_ or mask.ndim != 2:
            raise ValueError(f"DiscDilation takes a 2-D bool mask, got {mask.dtype} {mask.shape}")
        self.mask = mask
        self.distance = ndimage.distance_transform_edt(~mask) if mask.any() else None

    def __call__(self, radius: float) -> np.ndarray:
        """The dilation by the disc of `radius` pixels: a new bool array (H, W)."""
        if self.distance is None:
            return self.mask.copy()
        return self.distance <= radius + _EPS


def dilate(mask: Tensor, radius: float, *, shape: str = "disc") -> Tensor:
    """Binary dilation of masks.

    Args:
        mask: BoolTensor[..., H, W]; every leading index is a separate mask.
        radius: >= 0 pixels. "disc": any real radius (see `DiscDilation`). "square": a whole
            number of pixels r, dilating by the (2r+1) x (2r+1) square (Chebyshev distance <= r).
        shape: "disc" (Euclidean) or "square".

    Returns:
        BoolTensor of `mask`'s shape, on its device. Pixels outside the image count as empty.
    """
    if mask.dtype != torch.bool or mask.dim() < 2:
        raise ValueError(f"dilate takes boolean masks [..., H, W], got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    if not (math.isfinite(radius) and radius >= 0):
        raise ValueError(f"dilation radius must be finite and >= 0, got {radius}")
    if shape == "square":
        if int(radius) != radius:
            raise ValueError(f"a square dilation takes whole pixels, got {radius}")
        r = int(radius)
        flat = mask.reshape(-1, 1, *mask.shape[-2:]).float()
        # A max over the (2r+1)^2 window; max_pool pads with -inf, so the border adds nothing.
        out = F.max_pool2d(flat, 2 * r + 1, stride=1, padding=r) > 0
        return out.view(mask.shape)
    if shape != "disc":
        raise ValueError(f"unknown dilation shape {shape!r}; choose from {DILATION_SHAPES}")
    # One implementation of the disc for every caller: scipy's exact distance transform, on the
    # CPU, whose cost does not grow with the radius.
    flat = mask.detach().reshape(-1, *mask.shape[-2:]).cpu().numpy()
    out = np.stack([DiscDilation(m)(radius) for m in flat]) if len(flat) else flat
    return torch.from_numpy(out).to(mask.device).view(mask.shape)
