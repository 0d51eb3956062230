"""Comprehensiveness (ERASER; DeYoung et al., 2020), adapted from tokens to pixels.

    comp_k(x) = p_y(x) - p_y(x with its top-k% most salient pixels replaced by the substrate)
    comprehensiveness(x) = mean over k in `fractions` of comp_k(x)         (an AOPC)

Higher is better: removing what the map calls important should hurt the prediction. y is the
model's predicted class on the clean x unless a `target` is given.
"""

from __future__ import annotations

from align.metrics.base import register_metric
from align.metrics.perturbation import AOPCMetric

__all__ = ["Comprehensiveness"]


@register_metric
class Comprehensiveness(AOPCMetric):
    """Drop in p_y when the top-k% pixels are removed, averaged over k.

    Args:
        substrate: what removed pixels become: "blur" (default), "mean", "zero" or a tensor.
        fractions: the k's, default (0.01, 0.05, 0.1, 0.2, 0.5).
        max_batch: most perturbed images per model call.

    Call with model, x [B, 3, H, W], saliency [B, 1, h, w] and optionally target [B]. Returns
    values [B] and curves [B, F] (the drop at each k).
    """

    name = "comprehensiveness"
    direction = "higher"
    keep = False  # the top-k pixels are replaced
