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
    """Drop in p_y when the top-k% pixels are removed, averaged over k (arguments, call and
    result as `AOPCMetric`)."""

    name = "comprehensiveness"
    direction = "higher"
    keep = False  # the top-k pixels are replaced
