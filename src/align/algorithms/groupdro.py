"""GroupDRO (Sagawa et al., "Distributionally Robust Neural Networks for Group Shifts", ICLR 2020,
Algorithm 1), with training domains as groups: DomainBed's `GroupDRO`.

    l_d = CE on domain d's minibatch                          (d = 1..D)
    q_d <- q_d * exp(eta * l_d),  q <- q / sum(q)             (no gradient; q is a buffer)
    L   = sum_d q_d l_d

`q` is a registered buffer, so it is saved with the algorithm's `state_dict` (a resumed run goes
on with the same weights). It starts uniform (DomainBed starts from ones; the normalisation makes
the two identical). The update happens inside `losses`, once per training step, before the loss is
formed, as in DomainBed. Departure: one forward pass over the concatenated batch (as ERM) instead
of one per domain; the two agree unless BatchNorm runs in train mode (DomainBed freezes it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..hparams import HParam
from .base import ALGORITHMS, Algorithm, Batch


@ALGORITHMS.register("groupdro")
class GroupDRO(Algorithm):
    """Exponentiated-gradient weights on the per-domain risks (DomainBed)."""

    HPARAMS = {
        "groupdro_eta": HParam(1e-2, "DomainBed", "step size of the domain weights q",
                               ("log", 1e-3, 1e-1)),
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("q", torch.full((self.num_domains,), 1.0 / self.num_domains))

    def domain_losses(self, batch: Batch) -> torch.Tensor:
        """Per-domain mean cross-entropy [D] (the batch is grouped by domain, equal sizes)."""
        if batch.n_domains != self.num_domains:
            raise ValueError(f"algorithm 'groupdro' was built for {self.num_domains} domains, "
                             f"the batch has {batch.n_domains}")
        ce = F.cross_entropy(self.classifier(batch.x), batch.y, reduction="none")
        return ce.view(batch.n_domains, -1).mean(dim=1)

    def losses(self, phase: str, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        losses = self.domain_losses(batch)
        with torch.no_grad():
            self.q.mul_(torch.exp(self.hparams["groupdro_eta"] * losses))
            self.q.div_(self.q.sum())
        # A copy: the product saves its operands for backward, and q changes at the next step.
        loss = torch.dot(losses, self.q.clone())
        terms = {"loss": loss, "ce": losses.mean()}
        terms.update({f"q_{d}": self.q[d].clone() for d in range(self.num_domains)})
        return terms
