"""Insertion and deletion AUC (RISE; Petsiuk et al., 2018).

Pixels are moved in order of decreasing saliency, in `n_steps` equal steps of pixel fraction:

    deletion:  c_del(f) = p_y(x with the top-f most salient pixels replaced by the substrate)
    insertion: c_ins(f) = p_y(substrate with the top-f most salient pixels of x put back)
    AUC = trapezoid integral of the curve over f in [0, 1]

so c_del(0) = c_ins(1) = p_y(x) and c_del(1) = c_ins(0) = p_y(substrate). Insertion: higher is
better (the right pixels restore the prediction quickly); deletion: lower is better (removing them
destroys it quickly). RISE inserts into a blurred copy and deletes to zeros; here both use the one
configurable substrate (default blur) so the two curves share their endpoints.

DRE's explanation "AUC" (RISE's code) is `Insertion(substrate="dre_blur", n_steps=28)` on the
label's Grad-CAM: at 224 px 1,792 pixels per step, and its `auc` formula is this trapezoid rule
on the uniform grid (preset `dre_auc` of `align.evaluation_presets`; docs/metrics.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from align.metrics.base import MetricResult, register_metric
from align.metrics.perturbation import PerturbationMetric

__all__ = ["Deletion", "Insertion"]


class _CurveMetric(PerturbationMetric):
    """Area under the p_y-versus-fraction curve, all n_steps + 1 points in one batched pass.

    Args:
        substrate: "blur" (default), "mean", "zero" or a tensor broadcastable to x.
        n_steps: number of equal fraction steps; the curve has n_steps + 1 points, 0 and 1
            included.
        max_batch: most perturbed images per model call.

    Returns values [B] (the AUC, in [0, 1]) and curves [B, n_steps + 1] (p_y at each fraction).
    """

    def __init__(
        self, substrate: str | Tensor = "blur", n_steps: int = 20, max_batch: int | None = 256
    ) -> None:
        if n_steps < 1:
            raise ValueError("n_steps must be >= 1")
        super().__init__(substrate, [i / n_steps for i in range(n_steps + 1)], max_batch)
        self.n_steps = n_steps

    def compute(self, *, model, x, saliency, target, gt_mask) -> MetricResult:
        p_clean, target, p = self.curve(model, x, saliency, target)
        grid = p.new_tensor(self.fractions)
        return MetricResult(
            values=torch.trapezoid(p, x=grid, dim=1),
            curves=p,
            fractions=list(self.fractions),
            extras={"target": target, "p_clean": p_clean},
        )


@register_metric
class Insertion(_CurveMetric):
    """Insertion AUC: start from the substrate, insert the most salient pixels of x first."""

    name = "insertion"
    direction = "higher"
    keep = True  # the top-f pixels come from x, the rest from the substrate


@register_metric
class Deletion(_CurveMetric):
    """Deletion AUC: start from x, replace the most salient pixels with the substrate first."""

    name = "deletion"
    direction = "lower"
    keep = False  # the top-f pixels are replaced by the substrate
