"""Loss pieces shared by the explanation-guided algorithms (one place, no copies)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .metrics.substrates import FILLS


def total_variation(m: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean |difference| of vertically and horizontally adjacent
    pixels of m [B, 1, H, W]; a scalar. (The paper names a smoothness penalty; this exact form is
    our choice.)"""
    dh = (m[..., 1:, :] - m[..., :-1, :]).abs().mean()
    dw = (m[..., :, 1:] - m[..., :, :-1]).abs().mean()
    return dh + dw


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize masks [B, 1, H, W] to `size`; area averaging when shrinking keeps soft coverage."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    if mask.shape[-2] >= size[0] and mask.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(mask, size)
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)


def fill_like(x: torch.Tensor, kind: str) -> torch.Tensor:
    """What replaces removed pixels of normalised images x [B, 3, H, W]: the fill `kind` of
    `align.metrics.substrates.FILLS` ("zero": the dataset mean colour; "blur": the metrics' blur
    substrate, kernel 11, sigma 5; "noise": standard normal noise from torch's global generator,
    so checkpointed and reproducible)."""
    if kind not in FILLS:
        raise ValueError(f"unknown fill {kind!r}; choose one of: {', '.join(FILLS.names())}")
    return FILLS.get(kind)(x)


def same_class_partners(y: torch.Tensor) -> torch.Tensor:
    """For each sample, the index of a random other sample of the same class, [B] -> [B].

    Vectorised: shuffle, stable-sort by label, then point every sample at its successor within its
    class group (cyclically). A sample alone in its class is paired with itself.
    """
    b = y.numel()
    shuffle = torch.randperm(b, device=y.device)
    order = shuffle[torch.sort(y[shuffle], stable=True).indices]  # grouped by class, random inside
    sorted_y = y[order]
    counts = torch.bincount(sorted_y)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(b, device=y.device)
    start = starts[sorted_y]
    n = counts[sorted_y]
    partner_pos = start + (pos - start + 1) % n
    partners = torch.empty_like(order)
    partners[order] = order[partner_pos]
    return partners


def same_class_permutation(y: torch.Tensor) -> torch.Tensor:
    """A uniformly random permutation within each class, [B] -> [B] partner indices.

    DRE's pairing (`dre/mixuploss.py`: `randperm` of each class's samples): sample i is paired with
    `partner[i]`, of the same class, and may be paired with itself. Vectorised: two independent
    random orders grouped by class (a random shuffle, then a stable sort by label) are laid side
    by side, so the k-th sample of class c in the first is paired with the k-th in the second.
    """
    def grouped_random_order() -> torch.Tensor:
        shuffle = torch.randperm(y.numel(), device=y.device)
        return shuffle[torch.sort(y[shuffle], stable=True).indices]

    src, dst = grouped_random_order(), grouped_random_order()
    partners = torch.empty_like(src)
    partners[src] = dst
    return partners


def soft_bce(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6,
             reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy between maps `pred` and `target` [B, 1, h, w] (any equal shapes) in
    [0, 1], with `pred` squashed affinely into `[eps, 1 - eps]` first: `eps + (1 - 2 eps) pred`.

    Why a squash and not a clamp: a min-max normalised Grad-CAM is exactly 0 at its minimum (and 1
    at its maximum), where BCE's gradient is unbounded. Clamping to `[eps, 1 - eps]` bounds it but
    gives an exactly zero gradient wherever `pred < eps`, including where `target` is 1: guidance
    could then lower attention but never raise it where the CAM is zero (31% of a random
    ResNet-18's CAM pixels at 224 px, 58% on the small CNN). The affine squash keeps every
    gradient non-zero where `pred` and `target` disagree and bounds its size by `1 / eps`.
    `reduction` as in `F.binary_cross_entropy` ("none" gives the per-pixel values).

    Computed in float32 with autocast off, whatever the training precision: `1 - eps` is not
    representable in bfloat16 for eps < 2^-9, and CUDA's autocast refuses this function.
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)  # float64 stays float64
    with torch.autocast(pred.device.type, enabled=False):
        return F.binary_cross_entropy(eps + (1 - 2 * eps) * pred.to(dtype), target.to(dtype),
                                      reduction=reduction)


def masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean of `values` with `weight` broadcast to its shape; 0 (still on the graph) when
    every weight is 0, e.g. a batch whose masks are all empty."""
    weight = weight.to(values.dtype).expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1e-12)


def has_annotation(mask: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] -> [B] float: 1 where the mask marks at least one pixel. An empty mask carries
    no annotation, so the mask-supervised baselines leave that sample out of their explanation term
    (as GRADIA's and RES's code leave out images without a human label)."""
    return (mask.flatten(1).amax(dim=1) > 0).to(mask.dtype)


def binomial_blur3(m: torch.Tensor) -> torch.Tensor:
    """OpenCV's `GaussianBlur(m, (3, 3), 0)` on maps [B, 1, h, w]: the fixed 3x3 kernel
    [1, 2, 1]^T [1, 2, 1] / 16 that OpenCV uses for sigma 0 and ksize 3, with its default border
    (BORDER_REFLECT_101, torch's "reflect"). GRADIA and RES-G blur their resized masks this way."""
    k1 = m.new_tensor([0.25, 0.5, 0.25])
    kernel = (k1[:, None] * k1[None, :]).view(1, 1, 3, 3)
    # Reflection needs two pixels per side; a 1-pixel side is left as it is (replicate).
    mode = "reflect" if min(m.shape[-2:]) >= 2 else "replicate"
    return F.conv2d(F.pad(m, (1, 1, 1, 1), mode=mode), kernel)


def normalize_by_max(m: torch.Tensor) -> torch.Tensor:
    """Divide each map [B, 1, h, w] by its maximum; an all-zero map stays all zero (no NaN)."""
    peak = m.flatten(1).amax(dim=1).view(-1, *([1] * (m.dim() - 1)))
    return torch.where(peak > 0, m / torch.where(peak > 0, peak, torch.ones_like(peak)),
                       torch.zeros_like(m))
