"""HAICS (Shen et al., "Human-AI Interactive and Continuous Sensemaking", CHI EA 2021): Grad-CAM
supervised by annotations with a binary cross-entropy, as implemented among the baselines of RES's
public code (`YuyangGao/RES`, `transforms == 'HAICS'`), which is what we follow.

    L = CE(f(x), y) + guide_weight * mean_{annotated pixels} BCE(CAM, M+)

CAM: the label's Grad-CAM at the last block, min-max normalised (no ReLU, as RES's code). M+: the
positive part of the annotation at the CAM's grid; with our masks (a full segmentation, every pixel
annotated) it is the mask area-resized to the CAM's grid, and the mean runs over all pixels of the
samples whose mask is not empty.

Departures: RES's code resizes by nearest neighbour (ours: area averaging, equal on block-aligned
masks) and multiplies an already averaged BCE by the annotation map, which scales the loss by the
annotated fraction; we take the plain mean over annotated pixels. The CAM is squashed affinely
into [bce_eps, 1 - bce_eps] inside the BCE (a min-max CAM is exactly 0 and 1 somewhere, where BCE's
gradient is unbounded; a clamp would zero the gradient where the CAM is 0 and the mask 1; same
`losses.soft_bce` as ALIGN's guidance).
"""

from __future__ import annotations

import torch

from ..hparams import HParam
from ..losses import has_annotation, masked_mean, resize_mask, soft_bce
from .base import ALGORITHMS
from .mask_guided import MaskGuided


def haics_loss(cam: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean BCE between CAMs [B, 1, h, w] and masks [B, 1, H, W] resized to the CAM's grid, over
    the pixels of annotated samples."""
    target = resize_mask(mask, tuple(cam.shape[-2:]))
    bce = soft_bce(cam, target, eps=eps, reduction="none")
    return masked_mean(bce, has_annotation(mask).view(-1, 1, 1, 1))


@ALGORITHMS.register("haics")
class HAICS(MaskGuided):
    """CE plus the BCE between the Grad-CAM and the mask on annotated pixels."""

    HPARAMS = {
        **MaskGuided.HPARAMS,
        "bce_eps": HParam(1e-3, "our choice (as ALIGN's bce_eps)",
                          "BCE's Grad-CAM prediction squashed into [eps, 1-eps] (affine, see losses.soft_bce)",
                          bounds="(0, 0.5)"),
    }

    def explanation(self, cam: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return haics_loss(cam, mask, self.hparams["bce_eps"]), {}
