"""DRE: distributionally robust explanations (Li et al., CVPR 2023), ALIGN's classifier regulariser.

    L = CE(f(x), y) + reg_weight * L_reg
    L_reg = exp_weight * L1(norm GC(x~), lam norm GC(x) + (1 - lam) norm GC(x'))   (explanation consistency)
          + sparse_weight * mean(norm GC)                                          (Grad-CAM sparsity)
          + mixce_weight * CE(f(x~), y)                                            (mixup CE)

with x~ = lam x + (1 - lam) x', x' a random other sample of the same class (pooled over training
domains), lam ~ Beta(alpha, alpha), Grad-CAM of the label at the backbone's last block, per-sample
min-max normalised. Weights 1.0 / 0.5 / 0.1 and alpha = 0.2 follow DRE's public code.

The clean forward pass serves both the cross-entropy and the Grad-CAM (`forward_with_features`),
so a step costs two forward passes (clean, mixed) and their backward, about 2x ERM's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..explain.gradcam import gradcam_from_features
from ..hparams import HParam
from ..losses import same_class_partners
from .base import ALGORITHMS, Algorithm, Batch


@ALGORITHMS.register("dre")
class DRE(Algorithm):
    """CE plus DRE's same-class mixup explanation-consistency regulariser."""

    name = "dre"
    HPARAMS = {
        "reg_weight": HParam(1.0, "DRE code (lambda4 in ALIGN; unknown in the paper)",
                             "weight of L_reg; 0 disables it (the 'no L_reg' ablation)",
                             ("choice", [0.1, 0.5, 1.0, 2.0])),
        "mix_alpha": HParam(0.2, "DRE code", "lam ~ Beta(alpha, alpha), one lam per step"),
        "exp_weight": HParam(1.0, "DRE code", "weight of the explanation-consistency L1"),
        "sparse_weight": HParam(0.5, "DRE code", "weight of the Grad-CAM sparsity term"),
        "mixce_weight": HParam(0.1, "DRE code", "weight of the mixup cross-entropy"),
    }

    def clean_pass(self, x: torch.Tensor, y: torch.Tensor, need_cam: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, K] and, if needed, the label's normalised Grad-CAM [B, 1, h, w] (with graph)."""
        logits, feats = self.classifier.forward_with_features(x)
        if not need_cam:
            return logits, None
        cam = gradcam_from_features(feats, logits, y, create_graph=True, relu=True, normalize=True)
        return logits, cam

    def reg_terms(self, x: torch.Tensor, y: torch.Tensor, cam: torch.Tensor) -> dict[str, torch.Tensor]:
        """DRE's L_reg and its parts, reusing the clean pass's Grad-CAM `cam` [B, 1, h, w]."""
        hp = self.hparams
        partner = same_class_partners(y)
        alpha = torch.tensor(hp["mix_alpha"], device=x.device)
        lam = torch.distributions.Beta(alpha, alpha).sample()
        x_mix = lam * x + (1 - lam) * x[partner]
        logits_mix, feats_mix = self.classifier.forward_with_features(x_mix)
        cam_mix = gradcam_from_features(feats_mix, logits_mix, y, create_graph=True,
                                        relu=True, normalize=True)
        exp = F.l1_loss(cam_mix, lam * cam + (1 - lam) * cam[partner])
        sparse = 0.5 * (cam.mean() + cam_mix.mean())  # maps are >= 0, so mean == mean |.|
        mix_ce = F.cross_entropy(logits_mix, y)
        reg = hp["exp_weight"] * exp + hp["sparse_weight"] * sparse + hp["mixce_weight"] * mix_ce
        return {"reg": reg, "reg_exp": exp, "reg_sparse": sparse, "reg_mixce": mix_ce}

    def guidance(self, batch: Batch, cam: torch.Tensor, step: int
                 ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Explanation guidance added by subclasses (ALIGN): (weighted loss or None, its terms)."""
        return None, {}

    def needs_cam(self, step: int) -> bool:
        return self.hparams["reg_weight"] > 0

    def classifier_losses(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        logits, cam = self.clean_pass(batch.x, batch.y, self.needs_cam(step))
        ce = F.cross_entropy(logits, batch.y)
        terms = {"ce": ce}
        loss = ce
        if self.hparams["reg_weight"] > 0:
            terms.update(self.reg_terms(batch.x, batch.y, cam))
            loss = loss + self.hparams["reg_weight"] * terms["reg"]
        if cam is not None:
            guide_loss, guide_terms = self.guidance(batch, cam, step)
            if guide_loss is not None:
                terms.update(guide_terms)
                loss = loss + guide_loss
        return {"loss": loss, **terms}

    def losses(self, phase: str, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        return self.classifier_losses(batch, step)
