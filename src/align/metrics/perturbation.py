"""Pixel ranking, top-k masks and batched perturbed predictions shared by the faithfulness metrics.

The perturbation metrics (comprehensiveness, sufficiency, insertion, deletion) all ask the same
question for several pixel fractions at once: what is p_target when the most salient fraction of
the pixels comes from x and the rest from a substrate (or the other way round)? This module
answers it for a whole batch and all fractions with one sort per saliency map and one (chunked)
model call on a [B*F, C, H, W] batch.

Ranking rule (documented because ties are common: flat Grad-CAM regions, all-zero maps, upsampled
coarse maps): pixels are ordered by decreasing saliency with a *stable* sort, so equal values keep
row-major order and the top-left-most of tied pixels ranks first. The same map therefore always
selects the same pixels, on every device and batch size.

Pixel counts: fraction f of N pixels selects round(f * N) pixels, halves rounded up.
"""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

import torch
from torch import Tensor

from align.metrics.base import (
    Metric,
    MetricResult,
    Model,
    clean_prediction,
    prepare_saliency,
    target_probability,
)
from align.metrics.substrates import make_substrate

__all__ = [
    "AOPC_FRACTIONS",
    "AOPCMetric",
    "PerturbationMetric",
    "perturbed_probabilities",
    "pixel_counts",
    "rank_pixels",
    "topk_masks",
]

# ERASER's bins (DeYoung et al., 2020), used for comprehensiveness and sufficiency by default.
AOPC_FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.5)


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """Validate fractions (each in [0, 1], at least one) and return them as a tuple of floats."""
    out = tuple(float(f) for f in fractions)
    if not out:
        raise ValueError("need at least one fraction")
    if any(not 0.0 <= f <= 1.0 for f in out):
        raise ValueError(f"fractions must lie in [0, 1], got {out}")
    return out


def pixel_counts(fractions: Sequence[float], n_pixels: int) -> list[int]:
    """Number of pixels selected by each fraction: round(f * N), halves up, clipped to [0, N]."""
    return [min(n_pixels, max(0, math.floor(f * n_pixels + 0.5))) for f in fractions]


def rank_pixels(saliency: Tensor) -> Tensor:
    """Rank of every pixel in its own map, 0 = most salient (stable: ties keep row-major order).

    Args:
        saliency: FloatTensor[B, 1, H, W].
    Returns:
        LongTensor[B, H*W].
    """
    flat = saliency.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    # Invert the permutation: rank[b, order[b, i]] = i.
    return torch.empty_like(order).scatter_(1, order, positions)


def topk_masks(saliency: Tensor, fractions: Sequence[float]) -> Tensor:
    """Boolean masks of the top-f most salient pixels of each map, for every fraction f.

    One sort per map serves all fractions: a pixel is in the top-f mask iff its rank is below the
    pixel count of f.

    Args:
        saliency: FloatTensor[B, 1, H, W].
        fractions: F fractions in [0, 1].
    Returns:
        BoolTensor[B, F, 1, H, W].
    """
    b, _, h, w = saliency.shape
    ranks = rank_pixels(saliency)
    counts = torch.tensor(pixel_counts(fractions, h * w), device=ranks.device)
    return (ranks[:, None, :] < counts[None, :, None]).view(b, len(counts), 1, h, w)


def perturbed_probabilities(
    model: Model,
    x: Tensor,
    substrate: Tensor,
    masks: Tensor,
    target: Tensor,
    *,
    keep: bool,
    max_batch: int | None = None,
) -> Tensor:
    """p_target of every (image, fraction) perturbation, evaluated as one flattened batch.

    With keep=False the masked pixels are replaced by the substrate (deletion); with keep=True
    only the masked pixels come from x and the rest from the substrate (insertion). The [B*F]
    inputs are built chunk by chunk so memory stays at `max_batch` images, not B*F.

    Args:
        x, substrate: FloatTensor[B, C, H, W].
        masks: BoolTensor[B, F, 1, H, W].
        target: LongTensor[B].
    Returns:
        FloatTensor[B, F].
    """
    b, f = masks.shape[:2]
    inside, outside = (x, substrate) if keep else (substrate, x)
    step = max_batch or b * f
    if step >= f:
        chunks = _whole_image_chunks(inside, outside, masks, target, step // f)
    else:
        chunks = _flat_chunks(inside, outside, masks, target, step)
    probs = [target_probability(model, batch, tgt) for batch, tgt in chunks]
    return torch.cat(probs).view(b, f)


def _whole_image_chunks(inside, outside, masks, target, n_images):
    """Chunks of `n_images` whole images x F fractions, built by broadcasting.

    `where` against inside[:, None] / outside[:, None] writes each perturbed image once, without
    first gathering F copies of x and of the substrate.
    """
    f = masks.shape[1]
    for b0 in range(0, masks.shape[0], n_images):
        sl = slice(b0, b0 + n_images)
        batch = torch.where(masks[sl], inside[sl, None], outside[sl, None]).flatten(0, 1)
        yield batch, target[sl].repeat_interleave(f)


def _flat_chunks(inside, outside, masks, target, step):
    """Chunks of `step` (image, fraction) pairs, for when one image's F fractions exceed `step`."""
    b, f = masks.shape[:2]
    flat_masks = masks.flatten(0, 1)
    owner = torch.arange(b, device=masks.device).repeat_interleave(f)
    for start in range(0, b * f, step):
        idx = owner[start : start + step]
        yield torch.where(flat_masks[start : start + step], inside[idx], outside[idx]), target[idx]


class PerturbationMetric(Metric):
    """Shared machinery of the faithfulness metrics: substrate, fractions, batched evaluation.

    Args:
        substrate: "blur" (default), "mean", "zero" or a tensor broadcastable to x.
        fractions: pixel fractions to evaluate.
        max_batch: most perturbed images per model call (None: all B*F at once).
    """

    category: ClassVar[str] = "faithfulness"
    needs_model: ClassVar[bool] = True
    needs_gt_mask: ClassVar[bool] = False
    # True: keep the top pixels and replace the rest; False: replace the top pixels.
    keep: ClassVar[bool]

    def __init__(
        self,
        substrate: str | Tensor = "blur",
        fractions: Sequence[float] = AOPC_FRACTIONS,
        max_batch: int | None = 256,
    ) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError("max_batch must be a positive integer or None")
        self.substrate = substrate
        self.fractions = check_fractions(fractions)
        self.max_batch = max_batch

    def curve(
        self, model: Model, x: Tensor, saliency: Tensor, target: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """p_target on the clean input and on every perturbation.

        Returns:
            p_clean FloatTensor[B], target LongTensor[B], p_perturbed FloatTensor[B, F].
        """
        p_clean, target = clean_prediction(model, x, target, self.max_batch)
        s = prepare_saliency(saliency, x.shape[-2:]).to(x.device)
        if s.shape[0] != x.shape[0]:
            raise ValueError(f"saliency has {s.shape[0]} maps for {x.shape[0]} images")
        masks = topk_masks(s, self.fractions)
        sub = make_substrate(x, self.substrate)
        p = perturbed_probabilities(
            model, x.detach(), sub, masks, target, keep=self.keep, max_batch=self.max_batch
        )
        return p_clean, target, p


class AOPCMetric(PerturbationMetric):
    """ERASER-style score: mean over fractions of the drop p_target(x) - p_target(perturbed).

    Args:
        substrate: what replaced pixels become: a name in `SUBSTRATES` ("blur", the default) or
            a tensor broadcastable to x.
        fractions: the k's, default `AOPC_FRACTIONS` (0.01, 0.05, 0.1, 0.2, 0.5).
        max_batch: most perturbed images per model call.

    Call with model, x [B, 3, H, W], saliency [B, 1, h, w] and optionally target [B]. `curves`
    holds the per-fraction drops [B, F]; `values` their mean [B] (the released ERASER scorer
    averages over its bins in the same way).
    """

    def compute(self, *, model, x, saliency, target, gt_mask) -> MetricResult:
        p_clean, target, p = self.curve(model, x, saliency, target)
        drops = p_clean[:, None] - p
        return MetricResult(
            values=drops.mean(dim=1),
            curves=drops,
            fractions=list(self.fractions),
            extras={"target": target, "p_clean": p_clean},
        )
