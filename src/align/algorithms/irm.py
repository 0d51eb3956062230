"""IRM (Arjovsky et al., "Invariant Risk Minimization", arXiv 1907.02893), DomainBed's `IRM`
(IRMv1 with DomainBed's unbiased split-half estimate of the penalty).

    R_d(s)    = CE(s * f(x_d), y_d)                       risk of domain d under a dummy scale s
    P_d       = dR_d/ds|_{s=1} on the even samples  *  dR_d/ds|_{s=1} on the odd samples
    L         = mean_d CE_d + w(t) * mean_d P_d,   w(t) = irm_lambda if t >= anneal else 1

The derivative has a closed form, dCE(s z, y)/ds at s = 1 = mean_i (sum_k p_ik z_ik - z_iy), which
equals DomainBed's `autograd.grad(loss, [scale], create_graph=True)` and is computed for all
domains at once (tested against it).

DomainBed rebuilds Adam at t == anneal, "because it doesn't like the sharp jump in gradient
magnitudes". The loop holds our optimiser object, so at that step `losses` clears its state in
place (`opt.state.clear()`: a cleared Adam equals a fresh one with the same hyperparameters) before
the loop's backward and step. A run resumed from a checkpoint taken before that step clears it when
it gets there; one resumed after it has the rebuilt state in its checkpoint. Departure: one
forward pass over the concatenated batch, as DomainBed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..hparams import HParam
from .base import ALGORITHMS, Algorithm, Batch


def scale_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d/ds CE(s * logits, y) at s = 1 for each domain: logits [D, n, K], y [D, n] -> [D]."""
    p = logits.softmax(dim=-1)
    expected = (p * logits).sum(dim=-1)
    target = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return (expected - target).mean(dim=-1)


def irm_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DomainBed's split-half IRM penalty per domain: logits [D, n, K], y [D, n] -> [D]."""
    return scale_grad(logits[:, 0::2], y[:, 0::2]) * scale_grad(logits[:, 1::2], y[:, 1::2])


@ALGORITHMS.register("irm")
class IRM(Algorithm):
    """Cross-entropy plus the IRMv1 penalty across training domains (DomainBed)."""

    # The split-half penalty needs an even and an odd sample in every domain: with one, the odd
    # half is empty, its mean NaN, and so the loss at step 0 (DomainBed's too).
    MIN_DOMAIN_BATCH = 2
    HPARAMS = {
        "irm_lambda": HParam(1e2, "DomainBed", "penalty weight after the anneal",
                             ("log", 1e-1, 1e5)),
        # DomainBed searches int(10**U(0, 4)); a "log" search would draw floats for this int.
        "irm_penalty_anneal_iters": HParam(500, "DomainBed",
                                           "steps at penalty weight 1; Adam reset at the switch",
                                           ("choice", [1, 10, 100, 500, 1000, 5000])),
    }

    def anneal_step(self) -> int:
        return int(self.hparams["irm_penalty_anneal_iters"])

    def losses(self, phase: str, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        d = batch.n_domains
        logits = self.classifier(batch.x).view(d, -1, self.num_classes)
        y = batch.y.view(d, -1)
        nll = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # = mean_d CE_d (equal sizes)
        penalty = irm_penalty(logits, y).mean()
        anneal = self.anneal_step()
        weight = self.hparams["irm_lambda"] if step >= anneal else 1.0
        if step == anneal:
            for opt in self.optimizers().values():
                opt.state.clear()
        return {"loss": nll + weight * penalty, "ce": nll, "irm_penalty": penalty}
