"""ERM: empirical risk minimisation, the pooled cross-entropy over all training domains."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ALGORITHMS, Algorithm, Batch


@ALGORITHMS.register("erm")
class ERM(Algorithm):
    """Cross-entropy on the concatenated, domain-balanced batch (DomainBed's ERM)."""

    def losses(self, phase: str, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(self.classifier(batch.x), batch.y)
        return {"loss": ce, "ce": ce}
