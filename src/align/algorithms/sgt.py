"""SGT: saliency-guided training (Ismail et al., "Improving Deep Learning Interpretability by
Saliency Guided Training", NeurIPS 2021; public code `ayaabdelsalam91/saliency_guided_training`).

    S(x)     = |mean_c d f_y(x) / d x_c|         plain-gradient saliency of the label's logit
    x~       = x with the k = floor(mask_fraction * H * W) lowest-saliency pixels (all channels)
               replaced by uniform noise in [min, max] of that image channel
    L        = CE(f(x), y) + kl_weight * KL( softmax f(x) || softmax f(x~) )

As in SGT's code, the saliency comes from a separate pass in eval mode and is not differentiated
through (x~ is a constant); the KL is `KLDivLoss(reduction="batchmean")(log_softmax f(x~),
softmax f(x))`, with gradients through both passes; the clean and the masked passes are separate
forwards (so train-mode BatchNorm sees each batch on its own). One `topk` per batch picks the
masked pixels; the noise is drawn from torch's global RNG (checkpointed, reproducible).

Departures: SGT's code takes the signed channel-mean gradient unless `--abs` is given; we default
to its absolute value (the paper masks the *least salient* features) and keep the code's signed
variant as `saliency_abs: false`. Its code fills with the channel mean unless `--RandomMasking`;
we default to the paper's random values (`fill: noise`), `fill: mean` gives the code's default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hparams import HParam
from .base import ALGORITHMS, Algorithm, Batch, frozen

FILLS = ("noise", "mean")


def input_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, absolute: bool
                   ) -> torch.Tensor:
    """Channel-mean gradient of the label's logit w.r.t. the input (its absolute value if
    `absolute`), detached: x [B, C, H, W], y [B] -> [B, H, W].

    One backward pass for the batch (the sum of the per-sample logits), so samples must not
    interact in `model` (true in eval mode)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), xg)
    sal = grad.mean(dim=1)
    return sal.abs() if absolute else sal


def lowest_saliency_mask(saliency: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask [B, 1, H, W] of each sample's k = max(1, floor(fraction * H * W)) pixels with
    the lowest saliency [B, H, W] (SGT code's `get_SingleMask(..., remove_important=False)`)."""
    b, h, w = saliency.shape
    k = max(1, int(fraction * h * w))
    idx = saliency.reshape(b, -1).topk(k, dim=1, largest=False).indices
    mask = torch.zeros(b, h * w, dtype=torch.bool, device=saliency.device)
    mask.scatter_(1, idx, True)
    return mask.view(b, 1, h, w)


def fill_masked(x: torch.Tensor, mask: torch.Tensor, fill: str) -> torch.Tensor:
    """Replace the masked pixels of x [B, C, H, W] (mask [B, 1, H, W], all channels) by uniform
    noise in [min, max] of the image channel ("noise") or by the channel mean ("mean")."""
    flat = x.flatten(2)
    if fill == "noise":
        lo = flat.amin(dim=2)[..., None, None]
        hi = flat.amax(dim=2)[..., None, None]
        values = lo + (hi - lo) * torch.rand_like(x)
    elif fill == "mean":
        values = flat.mean(dim=2)[..., None, None].expand_as(x)
    else:
        raise ValueError(f"unknown SGT fill {fill!r}; choose from {FILLS}")
    return torch.where(mask, values, x)


@ALGORITHMS.register("sgt")
class SGT(Algorithm):
    """CE plus the KL between predictions on the image and on its low-saliency-masked copy."""

    HPARAMS = {
        "mask_fraction": HParam(0.1, "SGT code (--featuresDroped default, MNIST/CIFAR/BIRD)",
                                "fraction of pixels masked per image",
                                ("choice", [0.1, 0.2, 0.3, 0.5]), bounds="(0, 1)"),
        "kl_weight": HParam(1.0, "SGT code (CE + KL, unweighted)", "weight of the KL term",
                            ("log", 0.1, 10.0)),
        "saliency_abs": HParam(True, "SGT paper (lowest |saliency|); SGT code default: signed",
                               "rank pixels by |channel-mean gradient| (false: signed)"),
        "fill": HParam("noise", "SGT paper (random values in [min, max]); code default: mean",
                       "masked pixels get uniform noise in the channel's range | the channel mean",
                       choices=FILLS),
    }

    def masked_input(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x~ [B, C, H, W] detached, the boolean mask of replaced pixels [B, 1, H, W])."""
        with frozen(self.classifier) as model:  # SGT code: saliency in eval mode (no BN update)
            sal = input_saliency(model, x, y, self.hparams["saliency_abs"])
        mask = lowest_saliency_mask(sal, self.hparams["mask_fraction"])
        return fill_masked(x.detach(), mask, self.hparams["fill"]), mask

    def losses(self, phase: str, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        x_masked, _ = self.masked_input(batch.x, batch.y)
        logits = self.classifier(batch.x)
        ce = F.cross_entropy(logits, batch.y)
        kl = F.kl_div(F.log_softmax(self.classifier(x_masked), dim=1), F.softmax(logits, dim=1),
                      reduction="batchmean")
        return {"loss": ce + self.hparams["kl_weight"] * kl, "ce": ce, "kl": kl}
