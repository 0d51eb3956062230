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
    """Drop in p_y when only the top-k% pixels are kept (the rest becomes the substrate),
    averaged over k (arguments, call and result as `AOPCMetric`)."""

    name = "sufficiency"
    direction = "lower"
    keep = True  # only the top-k pixels survive
