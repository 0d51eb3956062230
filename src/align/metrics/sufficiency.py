"""Sufficiency (ERASER; DeYoung et al., 2020), adapted from tokens to pixels.

    suff_k(x) = p_y(x) - p_y(only the top-k% most salient pixels of x kept, the rest substrate)
    sufficiency(x) = mean over k in `fractions` of suff_k(x)               (an AOPC)

Lower is better: the pixels the map calls important should on their own keep the prediction.
Values can be negative (the kept pixels alone may be *more* convincing than the full image).

Not to be confused with Quantus's `Sufficiency`, which is Dasgupta et al.'s (2022) measure of how
often inputs with similar explanations share a prediction; it perturbs nothing.
"""

from __future__ import annotations

from align.metrics.base import register_metric
from align.metrics.perturbation import AOPCMetric

__all__ = ["Sufficiency"]


@register_metric
class Sufficiency(AOPCMetric):
    """Drop in p_y when only the top-k% pixels are kept, averaged over k.

    Args:
        substrate: what the other pixels become: "blur" (default), "mean", "zero" or a tensor.
        fractions: the k's, default (0.01, 0.05, 0.1, 0.2, 0.5).
        max_batch: most perturbed images per model call.

    Call with model, x [B, 3, H, W], saliency [B, 1, h, w] and optionally target [B]. Returns
    values [B] and curves [B, F] (the drop at each k).
    """

    name = "sufficiency"
    direction = "lower"
    keep = True  # only the top-k pixels survive
