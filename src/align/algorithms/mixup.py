"""Mixup across domains (Yan et al., "Improve Unsupervised Domain Adaptation with Mixup Training",
arXiv 2001.00677; Wang et al., arXiv 1912.01805), DomainBed's `Mixup`.

DomainBed's `random_pairs_of_minibatches`: shuffle the D training-domain minibatches and pair each
with the next one (cyclically); for each pair (i, j), lam ~ Beta(alpha, alpha) and

    x~ = lam x_i + (1 - lam) x_j
    L  = mean over pairs [ lam CE(f(x~), y_i) + (1 - lam) CE(f(x~), y_j) ]

Vectorised: the D mixed minibatches go through one forward pass. With one training domain, the
minibatch is paired with itself (x~ = x, L = CE), as in DomainBed. Departure: lam is drawn with
torch's RNG (checkpointed with the run) instead of numpy's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hparams import HParam
from .base import ALGORITHMS, Algorithm, Batch


def mixup_objective(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, lam: torch.Tensor,
                    perm: torch.Tensor) -> torch.Tensor:
    """DomainBed's Mixup objective for domain minibatches xs [D, n, C, H, W], ys [D, n].

    Pair p mixes domain perm[p] (weight lam[p]) with domain perm[(p + 1) % D]; lam [D]."""
    d, n = ys.shape
    i, j = perm, perm.roll(-1)
    lam_x = lam.view(d, 1, *([1] * (xs.dim() - 2)))
    x_mix = lam_x * xs[i] + (1 - lam_x) * xs[j]
    logits = model(x_mix.flatten(0, 1))
    ce_i = F.cross_entropy(logits, ys[i].flatten(), reduction="none").view(d, n).mean(1)
    ce_j = F.cross_entropy(logits, ys[j].flatten(), reduction="none").view(d, n).mean(1)
    return (lam * ce_i + (1 - lam) * ce_j).mean()


@ALGORITHMS.register("mixup")
class Mixup(Algorithm):
    """Inter-domain mixup of the domain minibatches (DomainBed)."""

    HPARAMS = {
        "mixup_alpha": HParam(0.2, "DomainBed", "lam ~ Beta(alpha, alpha), one lam per pair",
                              ("log", 0.1, 10.0), bounds="(0, inf)"),
    }

    def losses(self, phase: str, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        xs, ys = (torch.stack(t) for t in zip(*batch.per_domain()))
        d = xs.shape[0]
        alpha = torch.tensor(self.hparams["mixup_alpha"], device=xs.device)
        lam = torch.distributions.Beta(alpha, alpha).sample((d,))
        perm = torch.randperm(d, device=xs.device)
        loss = mixup_objective(self.classifier, xs, ys, lam, perm)
        return {"loss": loss, "ce": loss}
