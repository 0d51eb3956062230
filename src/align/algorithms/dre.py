"""DRE: distributionally robust explanations (Li et al., CVPR 2023), ALIGN's classifier regulariser.

By default this reproduces DRE's public code (`dre/train.py`, `dre/mixuploss.py`) term by term:

    L     = CE(f(x), y) + reg_weight * L_reg                    (CE over the whole batch)
    L_reg = exp_weight * L_exp + sparse_weight * L_sparse + mixce_weight * L_mixce
    for each class c (of all K), over its n_c samples in the batch, then summed and divided by K:
        L_exp    = mean_c L1(norm GC(x~), lam norm GC(x) + (1 - lam) norm GC(x'))
        L_sparse = ( mean_c S(norm GC(x)) + mean_c S(norm GC(x~)) ) / 2
        L_mixce  = mean_c CE(f(x~), y)

with x' = x[randperm of class c] (a sample may be paired with itself), x~ = lam x + (1 - lam) x',
one lam ~ Beta(0.2, 0.2) per sample, GC the label's Grad-CAM at the backbone's last block with no
ReLU and constant channel weights (Captum's `LayerGradCam` defaults), norm a per-sample min-max,
and S DRE's sparsity, `torch.linalg.norm(map, ord=1, dim=(1, 2))` averaged: a matrix 1-norm over
(channel, row), i.e. for each sample and column the max over rows of |map|. Weights 1.0 / 0.5 / 0.1.

Each departure from DRE is one hyperparameter (`mix_lambda`, `cam_relu`, `cam_weight_grad`,
`sparsity_form`, `pairing`, `reduction`); setting all six to their other value gives this
project's earlier formula (one lam per step, ReLU, second-order Grad-CAM, plain mean, partners
never self unless alone, batch means). Left as they are: DRE's `norm` has no epsilon (a constant
map gives NaN there, all zeros here, see `normalize_cam`); DRE runs separate forward passes per
class and for the mixed CE, which give the same values when the samples do not interact (BN frozen,
as DRE's ResNet; eval mode otherwise).

Every term is written per sample and reduced with per-sample weights (1 / (n_c K) per class, 1 / B
for the batch), so the per-class form needs no loop over classes. The clean forward pass serves
both the cross-entropy and the Grad-CAM (`forward_with_features`): a step costs two forward passes
(clean, mixed) and their backward, about 2x ERM's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..explain.gradcam import gradcam_from_features
from ..hparams import HParam
from ..losses import same_class_partners, same_class_permutation
from .base import ALGORITHMS, Algorithm, Batch

def cam_sparsity(cam: torch.Tensor, form: str) -> torch.Tensor:
    """Per-sample sparsity of maps [B, C, h, w] -> [B].

    "dre": DRE's `torch.linalg.norm(cam, ord=1, dim=(1, 2))` (`dre/mixuploss.py`) averaged over
    the remaining column axis. On a `[B, 1, h, w]` map, dims (1, 2) are (channel, row), so the
    matrix 1-norm is, per column, the max over rows of |cam| (the sum over the single channel
    changes nothing). This looks like a slip for an L1 norm of the map; we keep it because it is
    what DRE trains with. "mean": mean |cam|, the L1 norm per pixel (our earlier formula).
    """
    if form == "dre":
        return cam.abs().sum(dim=1).amax(dim=1).mean(dim=1)
    return cam.abs().mean(dim=(1, 2, 3))


@ALGORITHMS.register("dre")
class DRE(Algorithm):
    """CE plus DRE's same-class mixup explanation-consistency regulariser."""

    HPARAMS = {
        "reg_weight": HParam(1.0, "DRE code (lambda4 in ALIGN; unknown in the paper)",
                             "weight of L_reg; 0 disables it (the 'no L_reg' ablation)",
                             ("choice", [0.1, 0.5, 1.0, 2.0])),
        "mix_alpha": HParam(0.2, "DRE code (dre/mixuploss.py)", "lam ~ Beta(alpha, alpha)",
                            bounds="(0, inf)"),
        "exp_weight": HParam(1.0, "DRE code (dre/train.py)", "weight of the explanation-consistency L1"),
        "sparse_weight": HParam(0.5, "DRE code (dre/train.py)", "weight of the Grad-CAM sparsity term"),
        "mixce_weight": HParam(0.1, "DRE code (dre/train.py)", "weight of the mixup cross-entropy"),
        "mix_lambda": HParam("per_sample", "DRE code (dre/mixuploss.py: Beta.rsample((n, 1, 1)))",
                             "per_sample: one lam per sample; per_step: one lam per batch "
                             "(our earlier choice)", choices=("per_sample", "per_step")),
        "cam_relu": HParam(False, "DRE code (Captum LayerGradCam, relu_attributions=False)",
                           "apply ReLU to the Grad-CAM before min-max normalisation"),
        "cam_weight_grad": HParam(False, "DRE code (Captum LayerGradCam: plain autograd.grad, "
                                  "channel weights are constants)",
                                  "differentiate through the Grad-CAM channel weights "
                                  "(second-order autograd; our earlier choice)"),
        "sparsity_form": HParam("dre", "DRE code (dre/mixuploss.py: linalg.norm ord=1, dim=(1, 2))",
                                "dre: mean over columns of max_rows |cam|; mean: mean |cam| "
                                "(our earlier choice, the L1 norm DRE likely meant)",
                                choices=("dre", "mean")),
        "pairing": HParam("permutation", "DRE code (dre/mixuploss.py: randperm within each class)",
                          "permutation: randperm within the class, self-pairs possible; distinct: "
                          "another sample of the class unless alone (our earlier choice)",
                          choices=("permutation", "distinct")),
        "reduction": HParam("per_class", "DRE code (dre/mixuploss.py: per-class means, summed, "
                            "divided by the number of classes K)",
                            "per_class: each class's mean, summed, / K (all classes, also absent "
                            "ones); batch: means over the batch (our earlier choice)",
                            choices=("per_class", "batch")),
    }

    # ------------------------------------------------------------------ random draws
    def draw_partners(self, y: torch.Tensor) -> torch.Tensor:
        """Each sample's mixup partner, of the same class, [B] -> [B]."""
        if self.hparams["pairing"] == "permutation":
            return same_class_permutation(y)
        return same_class_partners(y)

    def draw_lambdas(self, n: int, device: torch.device) -> torch.Tensor:
        """Mixup weights [n]: one per sample (DRE) or one shared by the batch."""
        alpha = torch.tensor(self.hparams["mix_alpha"], device=device)
        beta = torch.distributions.Beta(alpha, alpha)
        if self.hparams["mix_lambda"] == "per_sample":
            return beta.sample((n,))
        return beta.sample().expand(n)

    # ------------------------------------------------------------------ pieces
    def cam(self, feats: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The label's normalised Grad-CAM [B, 1, h, w], differentiable (at least through the
        activations)."""
        hp = self.hparams
        return gradcam_from_features(feats, logits, y, create_graph=True,
                                     constant_weights=not hp["cam_weight_grad"],
                                     relu=hp["cam_relu"], normalize=True)

    def clean_pass(self, x: torch.Tensor, y: torch.Tensor, need_cam: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, K] and, if needed, the label's normalised Grad-CAM [B, 1, h, w] (with graph)."""
        logits, feats = self.classifier.forward_with_features(x)
        return logits, (self.cam(feats, logits, y) if need_cam else None)

    def sample_weights(self, y: torch.Tensor) -> torch.Tensor:
        """Weights [B] that turn per-sample terms into the reduced loss by a weighted sum.

        per_class: 1 / (n_c K), i.e. each class's mean, summed over classes, divided by the number
        of classes K of the dataset (DRE passes `len(datasets[0].classes)`, so classes absent from
        the batch count in K). batch: 1 / B.
        """
        if self.hparams["reduction"] == "batch":
            return torch.full(y.shape, 1.0 / y.numel(), device=y.device)
        counts = torch.bincount(y, minlength=self.num_classes).to(torch.float32)
        return 1.0 / (counts[y] * self.num_classes)

    def reg_terms(self, x: torch.Tensor, y: torch.Tensor, cam: torch.Tensor) -> dict[str, torch.Tensor]:
        """DRE's L_reg and its parts, reusing the clean pass's Grad-CAM `cam` [B, 1, h, w]."""
        hp = self.hparams
        partner = self.draw_partners(y)
        lam = self.draw_lambdas(len(y), x.device).to(x.dtype)
        lam_x, lam_cam = lam.view(-1, 1, 1, 1), lam.view(-1, 1, 1, 1).to(cam.dtype)
        x_mix = lam_x * x + (1 - lam_x) * x[partner]
        logits_mix, feats_mix = self.classifier.forward_with_features(x_mix)
        cam_mix = self.cam(feats_mix, logits_mix, y)
        target = lam_cam * cam + (1 - lam_cam) * cam[partner]
        exp_b = (cam_mix - target).abs().mean(dim=(1, 2, 3))
        form = hp["sparsity_form"]
        sparse_b = 0.5 * (cam_sparsity(cam, form) + cam_sparsity(cam_mix, form))
        mixce_b = F.cross_entropy(logits_mix, y, reduction="none")
        w = self.sample_weights(y).to(exp_b.dtype)
        exp, sparse, mix_ce = (w * exp_b).sum(), (w * sparse_b).sum(), (w * mixce_b).sum()
        reg = hp["exp_weight"] * exp + hp["sparse_weight"] * sparse + hp["mixce_weight"] * mix_ce
        return {"reg": reg, "reg_exp": exp, "reg_sparse": sparse, "reg_mixce": mix_ce}

    # ------------------------------------------------------------------ losses
    def guidance(self, batch: Batch, cam: torch.Tensor, step: int
                 ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Explanation guidance added by subclasses (ALIGN): (weighted loss or None, its terms)."""
        return None, {}

    def needs_cam(self, step: int) -> bool:
        return self.hparams["reg_weight"] > 0

    def step_kind(self, step: int) -> str:
        """The phases, and whether the classifier phase computes a Grad-CAM (its double
        backward is most of DRE's extra cost)."""
        kind = super().step_kind(step)
        cam = "classifier" in self.phases(step) and self.needs_cam(step)
        return kind + " with Grad-CAM" if cam else kind

    def classifier_losses(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        logits, cam = self.clean_pass(batch.x, batch.y, self.needs_cam(step))
        ce = F.cross_entropy(logits, batch.y)  # over the batch, not per class (dre/train.py)
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
