"""Localisation metrics: does the saliency map fall on the ground-truth object mask?

Shared conventions (all three metrics):
    saliency: FloatTensor[B, 1, h, w] or [B, h, w], upsampled bilinearly to the mask's H, W.
    gt_mask:  FloatTensor[B, 1, H, W] or [B, H, W] in [0, 1]; a pixel is inside when >= 0.5.
    An EMPTY mask (no pixel inside) gives no score: NaN in `values`, counted in `n_empty`, never a
    hit and never a zero, because "no object to find" says nothing about the map.
    No model is needed; `model`, `x` and `target` are ignored.

Edge cases (chosen so that an uninformative map can never score well):
    iou:                  the map is min-max normalised per sample; a constant map (all-zero
                          included) normalises to 0 everywhere, so with any threshold > 0 nothing
                          is selected and IoU = 0.
    pointing_game:        a constant map has no peak -> miss (0). With several equal maxima in a
                          non-constant map, the first in row-major order is the peak.
    energy_pointing_game: negative values are clipped to 0 (energy is a non-negative mass). A
                          constant positive map scores |gt| / (H*W), the chance level. An all-zero
                          (or all-negative) map has no energy at all -> 0, not NaN: excluding it
                          would drop exactly the samples where the explainer failed and flatter it.
"""

from __future__ import annotations

from abc import abstractmethod

from typing import ClassVar

import torch
from torch import Tensor

from align.maps import dilate, iou, minmax
from align.metrics.base import Metric, MetricResult, prepare_mask, prepare_saliency, register_metric
from align.metrics.perturbation import rank_pixels

__all__ = ["EnergyPointingGame", "IoU", "PointingGame"]


class _LocalisationMetric(Metric):
    """Prepares map and mask, masks out empty ground truth, delegates the score to `score`."""

    category: ClassVar[str] = "localisation"
    needs_model: ClassVar[bool] = False
    needs_gt_mask: ClassVar[bool] = True

    @abstractmethod
    def score(self, s: Tensor, gt: Tensor) -> Tensor:
        """s: FloatTensor[B, 1, H, W], gt: BoolTensor[B, 1, H, W] -> FloatTensor[B]."""

    def compute(self, *, model, x, saliency, target, gt_mask) -> MetricResult:
        gt = prepare_mask(gt_mask)
        s = prepare_saliency(saliency, gt.shape[-2:]).to(gt.device)
        if s.shape[0] != gt.shape[0]:
            raise ValueError(f"saliency has {s.shape[0]} maps for {gt.shape[0]} masks")
        empty = gt.flatten(1).sum(dim=1) == 0
        values = self.score(s, gt).to(s.dtype)
        values = torch.where(empty, torch.full_like(values, float("nan")), values)
        return MetricResult(values=values, n_empty=int(empty.sum()))


@register_metric
class IoU(_LocalisationMetric):
    """Intersection over union of the binarised map with the ground-truth mask.

    Args:
        threshold: with mode "threshold", pixels whose min-max normalised saliency is >= threshold
            are selected (default 0.5).
        mode: "threshold" (default) or "gt_area": select the top-|gt| pixels of the map (same
            stable ranking as the perturbation metrics), which removes the threshold choice and
            compares maps at the object's own size.
    """

    name = "iou"
    direction = "higher"

    def __init__(self, threshold: float = 0.5, mode: str = "threshold") -> None:
        if mode not in ("threshold", "gt_area"):
            raise ValueError(f"mode must be 'threshold' or 'gt_area', got {mode!r}")
        self.threshold = float(threshold)
        self.mode = mode

    def score(self, s: Tensor, gt: Tensor) -> Tensor:
        if self.mode == "threshold":
            # eps 0: any spread is information; a constant map normalises to all zeros.
            pred = minmax(s, eps=0.0) >= self.threshold
        else:
            area = gt.flatten(1).sum(dim=1, keepdim=True)
            pred = (rank_pixels(s) < area).view_as(gt)
        # An empty truth is NaN whatever the map selects (see `compute`); NaN for two empty
        # masks says the same.
        return iou(pred, gt, empty=float("nan"))


@register_metric
class PointingGame(_LocalisationMetric):
    """Hit (1) if the map's maximum lies inside the mask, else miss (0) (Zhang et al., 2016/2018).

    Args:
        tolerance: pixels of slack around the mask (a Euclidean disc dilation). Zhang et al. allow
            15 px at full resolution; the default 0 asks for the peak strictly inside the mask.
    """

    name = "pointing_game"
    direction = "higher"

    def __init__(self, tolerance: int = 0) -> None:
        if tolerance < 0:
            raise ValueError("tolerance must be >= 0")
        self.tolerance = int(tolerance)

    def score(self, s: Tensor, gt: Tensor) -> Tensor:
        flat = s.flatten(1)
        peak = flat.argmax(dim=1)  # first maximum in row-major order
        region = dilate(gt, self.tolerance, shape="disc") if self.tolerance else gt
        hit = region.flatten(1).gather(1, peak[:, None]).squeeze(1)
        constant = flat.amax(dim=1) == flat.amin(dim=1)
        return (hit & ~constant).to(s.dtype)


@register_metric
class EnergyPointingGame(_LocalisationMetric):
    """Share of the map's (non-negative) energy inside the mask (Wang et al., Score-CAM, 2020).

        energy(s, gt) = sum(relu(s) * gt) / sum(relu(s))        (0 for an all-zero map)
    """

    name = "energy_pointing_game"
    direction = "higher"

    def score(self, s: Tensor, gt: Tensor) -> Tensor:
        energy = s.clamp(min=0).flatten(1)
        inside = (energy * gt.flatten(1)).sum(dim=1)
        total = energy.sum(dim=1)
        ratio = inside / torch.where(total > 0, total, torch.ones_like(total))
        return torch.where(total > 0, ratio, torch.zeros_like(ratio))
