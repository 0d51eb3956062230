"""ALIGN (Hong et al., AAAI 2026, arXiv 2511.06944): a classifier and a masker trained in alternation.

Masker step (classifier frozen), paper eq. for L_mask:

    dist(x) = p_y(x (.) M(x)) - p_y(x (.) (1 - M(x)))
    L_mask  = MSE(dist, 1) + lambda1 * mean|M| + lambda2 * TV(M)

Classifier step (masker frozen; its mask is a fixed target):

    L_clf = CE + lambda3 * BCE(GradCAM_y(x), M(x)) + lambda4 * L_reg        (L_reg: DRE's, see dre.py)

Schedule (step t): warm-up `t < warmup_steps` trains the classifier alone on CE + L_reg; then
`masker_warmup_steps` train the masker alone; then every iteration updates the masker (every
`masker_every`-th iteration) and the classifier, on the same batch. "x (.) M" keeps x where M is
1 and puts `fill` elsewhere: `x * M + fill * (1 - M)`.

Ablations are configuration: `guidance: none` (= DRE), `guidance: fixed` (masks from `--masks`
in place of the masker, e.g. SAM masks: the paper's m-SAM), `reg_weight: 0` (no L_reg).
Every default that the paper does not give is marked "our choice" (see docs/align.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..hparams import HParam
from ..losses import (fill_like, has_annotation, masked_mean, resize_mask, soft_bce,
                      total_variation)
from ..maps import iou
from ..metrics.substrates import FILLS
from ..models.masker import Masker
from .base import ALGORITHMS, Batch, frozen
from .dre import DRE


@ALGORITHMS.register("align")
class ALIGN(DRE):
    """DRE's classifier objective plus guidance of its Grad-CAM by a jointly trained masker."""

    HPARAMS = {
        **DRE.HPARAMS,
        "guidance": HParam("masker", "paper (ablations: none = DRE, fixed = m-SAM)",
                           "source of the Grad-CAM target: masker | fixed (masks folder: the "
                           "m-SAM ablation) | none (= DRE)", choices=("masker", "fixed", "none")),
        "guide_weight": HParam(1.0, "our choice (lambda3; unknown in the paper)",
                               "weight of BCE(GradCAM, mask)", ("choice", [0.1, 0.5, 1.0, 2.0])),
        "sparsity_weight": HParam(0.2, "our choice (lambda1; unknown in the paper; one check at "
                                  "1.0 in the README, default kept)",
                                  "weight of mean|M| in L_mask", ("log", 0.01, 1.0)),
        "smooth_weight": HParam(0.05, "our choice (lambda2 and the TV form; unknown in the paper)",
                                "weight of TV(M) (mean absolute neighbour difference) in L_mask",
                                ("log", 0.005, 0.5)),
        "fill": HParam("zero", "our choice (the paper's x (.) M read literally)",
                       "what replaces removed pixels in L_mask: zero (normalised-space zero = the "
                       "mean colour) | blur (Gaussian 11 / sigma 5) | noise",
                       choices=tuple(FILLS.names())),
        "compare_at": HParam("cam", "our choice (GRADIA resizes the mask to the CAM)",
                             "where CAM and mask meet: cam (mask area-downsampled to the CAM's "
                             "grid) | input (CAM bilinearly upsampled)", choices=("cam", "input")),
        "warmup_steps": HParam(2500, "our choice (paper: a long classifier warm-up, '200 epochs'; "
                               "50% of DRE's 5,000 steps)",
                               "classifier-only steps on CE + L_reg before the masker; the masker "
                               "learns from the classifier's confidence, so it must be decent",
                               bounds="[0, inf)"),
        "masker_warmup_steps": HParam(500, "our choice (10% of DRE's 5,000 steps)",
                                      "masker-only steps after the warm-up; guidance starts after "
                                      "them and selection ignores earlier checkpoints",
                                      bounds="[0, inf)"),
        "bce_eps": HParam(1e-3, "our choice (1e-6 stalled CE on the synthetic benchmark: "
                          "docs/align.md)",
                          "Grad-CAM squashed affinely into [eps, 1-eps] inside the BCE; bounds "
                          "its gradient by 1/eps without zeroing it", bounds="(0, 0.5)"),
        "masker_every": HParam(1, "our choice (paper: alternation, phase lengths unknown)",
                               "after the warm-ups, update the masker every N iterations",
                               bounds="[1, inf)"),
        "masker_lr": HParam(1e-2, "our choice (measured: masker-only convergence, docs/align.md)",
                            "Adam learning rate of the masker", bounds="(0, inf)"),
        "masker_init_bias": HParam(-2.0, "our choice (measured: masker-only convergence, "
                                   "docs/align.md)",
                                   "initial bias of the masker's output logit (-2: mask ~0.12)"),
        "masker_width": HParam(8, "our choice (paper: 'a lightweight convolutional network')",
                               "half the masker's channels at 1/4 resolution (~20 k "
                               "parameters, docs/align.md)"),
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        hp = self.hparams
        self.masker = (Masker(hp["masker_width"], init_bias=hp["masker_init_bias"])
                       if hp["guidance"] == "masker" else None)
        self._guidance_start = self.objective_start(hp)

    @classmethod
    def needs_masks(cls, hparams: Mapping[str, Any] | None = None) -> bool:
        """Only the `fixed` ablation learns from a masks folder; the masker makes its own."""
        return cls.resolve_hparams(hparams)["guidance"] == "fixed"

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = super().build_optimizers()
        if self.masker is not None:
            opts["masker"] = torch.optim.Adam(self.masker.parameters(), lr=self.hparams["masker_lr"])
        return opts

    # ------------------------------------------------------------------ schedule
    def phases(self, step: int) -> Sequence[str]:
        hp = self.hparams
        if self.masker is None or step < hp["warmup_steps"]:
            return ("classifier",)
        t = step - hp["warmup_steps"]
        if t < hp["masker_warmup_steps"]:
            return ("masker",)
        if (t - hp["masker_warmup_steps"]) % hp["masker_every"] == 0:
            return ("masker", "classifier")
        return ("classifier",)

    @classmethod
    def objective_start(cls, hparams: Mapping[str, Any] | None = None) -> int:
        """Guidance by the masker starts after both warm-ups; fixed masks guide from step 0."""
        hp = cls.resolve_hparams(hparams)
        if hp["guidance"] == "masker":
            return hp["warmup_steps"] + hp["masker_warmup_steps"]
        return 0

    def losses(self, phase: str, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        if phase == "masker":
            return self.masker_losses(batch)
        return self.classifier_losses(batch, step)

    # ------------------------------------------------------------------ masker phase
    def masker_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """L_mask with the classifier frozen (eval mode, no parameter gradients)."""
        hp = self.hparams
        x, y = batch.x, batch.y
        m = self.masker(x)  # [B, 1, H, W]
        fill = fill_like(x, hp["fill"])
        # keep = x m + fill (1 - m), drop = x (1 - m) + fill m, each as one fused op (lerp);
        # the mask in the images' type (low precision under autocast).
        keep = torch.lerp(fill, x, m.to(x.dtype))
        drop = torch.lerp(x, fill, m.to(x.dtype))
        with frozen(self.classifier) as classifier:
            logits = classifier(torch.cat([keep, drop]))  # one pass for both
        p = F.softmax(logits, dim=1).gather(1, torch.cat([y, y])[:, None]).squeeze(1)
        dist = p[: len(y)] - p[len(y):]
        l_dist = F.mse_loss(dist, torch.ones_like(dist))
        sparsity = m.abs().mean()
        smooth = total_variation(m)
        loss = l_dist + hp["sparsity_weight"] * sparsity + hp["smooth_weight"] * smooth
        return {"loss": loss, "dist": l_dist, "sparsity": sparsity, "smooth": smooth,
                "mask_area": m.detach().mean()}

    # ------------------------------------------------------------------ classifier phase
    def needs_cam(self, step: int) -> bool:
        return super().needs_cam(step) or self._guided(step)

    def step_kind(self, step: int) -> str:
        """DRE's kinds, and whether the classifier phase also runs the masker (guidance)."""
        kind = super().step_kind(step)
        guided = "classifier" in self.phases(step) and self._guided(step)
        return kind + ", guided" if guided else kind

    def _guided(self, step: int) -> bool:
        hp = self.hparams
        if hp["guidance"] == "none":
            return False
        if hp["guidance"] == "fixed":
            return True
        return step >= self._guidance_start

    def guidance(self, batch: Batch, cam: torch.Tensor, step: int
                 ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """lambda3 * BCE(GradCAM_y(x), target mask), the target detached (masker frozen)."""
        if not self._guided(step):
            return None, {}
        if self.hparams["guidance"] == "masker":
            with torch.no_grad():
                target = self.masker(batch.x)
        else:
            target = batch.mask
        if self.hparams["compare_at"] == "cam":
            target = resize_mask(target, cam.shape[-2:])
        else:
            cam = F.interpolate(cam, size=target.shape[-2:], mode="bilinear", align_corners=False)
        eps = self.hparams["bce_eps"]
        if self.hparams["guidance"] == "fixed":
            # An empty mask from a masks folder carries no annotation (a mask source that found
            # no object): its sample is left out, as HAICS (the same BCE) and the other
            # mask-supervised baselines do (docs/baselines.md), not pushed to attend nowhere.
            per_pixel = soft_bce(cam, target, eps=eps, reduction="none")
            bce = masked_mean(per_pixel, has_annotation(batch.mask).view(-1, 1, 1, 1))
        else:
            bce = soft_bce(cam, target, eps=eps)
        return self.hparams["guide_weight"] * bce, {"guide": bce}

    # ------------------------------------------------------------------ evaluation
    def eval_terms(self, x: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per sample: the masker's IoU with ground-truth masks (threshold 0.5), its mean value
        inside them (coverage) and its mean area.

        A sample whose ground-truth mask is empty gets NaN (no score), never a hit.
        """
        if self.masker is None:
            return {}
        m = self.masker(x)
        out = {"masker_area": m.mean(dim=(1, 2, 3))}
        if mask is not None:
            pred, gt = m > 0.5, mask > 0.5
            has_gt = gt.flatten(1).any(1)
            out["masker_iou"] = torch.where(has_gt, iou(pred, gt, empty=torch.nan), torch.nan)
            # Mean soft mask value over the ground-truth region: how much of it the masker keeps,
            # independent of how much else it keeps (IoU mixes the two, and a region much smaller
            # than the mask, like the synthetic cue square, has a low IoU even when fully kept).
            kept = (m * gt).sum(dim=(1, 2, 3)).double() / gt.sum(dim=(1, 2, 3)).clamp_min(1)
            out["masker_coverage"] = torch.where(has_gt, kept, torch.nan)
        return out
