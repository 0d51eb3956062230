"""GRADIA (Gao et al., "Aligning Eyes between Humans and Deep Neural Network through Interactive
Attention Alignment", CSCW 2022; public code `YuyangGao/GRADIA`).

    L = CE(f(x), y) + guide_weight * mean_{annotated b} mean_{i,j} |CAM_b(i, j) - M'_b(i, j)|

CAM: the label's Grad-CAM at the last block, min-max normalised (no ReLU, as GRADIA's code).
M': the mask area-resized to the CAM's grid, blurred with OpenCV's 3x3 Gaussian (sigma 0, i.e. the
[1, 2, 1]/4 kernel, reflect-101 border) and divided by its maximum ("7x7 can be too small to show
attention details, blur it to reward nearby pixels", GRADIA code). Samples with an empty mask are
left out. GRADIA's reasonability weights (per-image weights from a user study) do not apply to
masks without such labels: every annotated sample weighs 1.
"""

from __future__ import annotations

import torch

from ..losses import binomial_blur3, has_annotation, masked_mean, normalize_by_max, resize_mask
from .base import ALGORITHMS
from .mask_guided import MaskGuided


def gradia_target(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """GRADIA's processed mask: masks [B, 1, H, W] -> [B, 1, h, w] in [0, 1] with maximum 1
    (all zero for an empty mask)."""
    return normalize_by_max(binomial_blur3(resize_mask(mask, size)))


def gradia_loss(cam: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between CAMs [B, 1, h, w] and `gradia_target`, over annotated samples."""
    target = gradia_target(mask, tuple(cam.shape[-2:]))
    per_sample = (cam - target).abs().mean(dim=(1, 2, 3))
    return masked_mean(per_sample, has_annotation(mask))


@ALGORITHMS.register("gradia")
class GRADIA(MaskGuided):
    """CE plus the L1 distance between the Grad-CAM and the blurred, resized mask."""

    HPARAMS = {**MaskGuided.HPARAMS}

    def explanation(self, cam: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return gradia_loss(cam, mask), {}
