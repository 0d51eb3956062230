"""Shared base of the mask-supervised Grad-CAM baselines (GRADIA, HAICS, RES-G, RES-L).

Each of them minimises

    L = CE(f(x), y) + guide_weight * L_exp(GradCAM_y(x), mask)

and differs only in `L_exp` (`explanation`). One clean forward pass gives both the logits and the
feature map; `gradcam_from_features(create_graph=True)` turns it into a differentiable Grad-CAM of
the label at the backbone's last block, min-max normalised per sample.

Departures shared by all four (see docs/baselines.md):

- GRADIA's and RES's code build the CAM with a `backward()` whose gradients are constants, so only
  the activations carry the explanation loss's gradient; we also differentiate through the
  Grad-CAM channel weights (second-order autograd). (DRE and ALIGN here keep DRE's constant
  weights by default, `cam_weight_grad`.)
- Their code normalises the raw CAM (no ReLU) by min-max; so do we by default (`cam_relu`).
- A sample whose mask is empty has no annotation and is left out of `L_exp` (their code skips
  images without a human label).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F

from ..explain.gradcam import gradcam_from_features
from ..hparams import HParam
from .base import Algorithm, Batch


class MaskGuided(Algorithm):
    """CE plus an explanation loss between the label's Grad-CAM and the batch's masks."""

    NEEDS_MASKS = True
    HPARAMS = {
        "guide_weight": HParam(1.0, "GRADIA / RES code (task + attention loss, unweighted)",
                               "weight of the explanation loss", ("log", 0.1, 10.0)),
        "cam_relu": HParam(False, "GRADIA / RES code (min-max of the raw CAM, no ReLU)",
                           "apply ReLU to the Grad-CAM before min-max normalisation"),
    }

    def cam_pass(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, K] and the label's normalised Grad-CAM [B, 1, h, w], differentiable."""
        logits, feats = self.classifier.forward_with_features(x)
        cam = gradcam_from_features(feats, logits, y, create_graph=True,
                                    relu=self.hparams["cam_relu"], normalize=True)
        return logits, cam

    @abc.abstractmethod
    def explanation(self, cam: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(L_exp, its named parts) for CAMs [B, 1, h, w] and masks [B, 1, H, W] in [0, 1]."""

    def losses(self, phase: str, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        logits, cam = self.cam_pass(batch.x, batch.y)
        ce = F.cross_entropy(logits, batch.y)
        exp, terms = self.explanation(cam, batch.mask)
        return {"loss": ce + self.hparams["guide_weight"] * exp, "ce": ce, "exp": exp, **terms}
