"""The algorithm contract.

An algorithm owns its networks and optimisers and, for every training iteration, names the phases
to run (`phases(step)`, e.g. `("classifier",)` for ERM or `("masker", "classifier")` for ALIGN's
alternation). For each phase the loop calls `losses(phase, batch, step)`, which returns the named
loss terms; `"loss"` is the one the loop back-propagates before stepping `optimizers()[phase]`.
The loop (not the algorithm) owns backward, stepping, NaN checks, logging and checkpoints.

This is DomainBed's `update(minibatches) -> dict` split in two so alternating schedules and
several optimisers fit the same loop.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn

from ..hparams import HParam, resolve
from ..models import Classifier, build_backbone
from ..registry import Registry

ALGORITHMS: Registry = Registry("algorithm")


@dataclass
class Batch:
    """One training minibatch, balanced over training domains.

    Attributes:
        x: images [B, 3, H, W], normalised.
        y: labels [B], int64.
        domain: index of each sample's training domain in `0..n_domains-1` [B]; the batch is
            grouped by domain with the same number of samples per domain.
        mask: optional masks [B, 1, H, W] in [0, 1] (annotations or a precomputed mask source).
        n_domains: number of training domains in the batch.
    """

    x: torch.Tensor
    y: torch.Tensor
    domain: torch.Tensor
    mask: torch.Tensor | None = None
    n_domains: int = 1

    def per_domain(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Split into the per-domain minibatches [(x_d, y_d), ...] (equal sizes by construction)."""
        xs = self.x.chunk(self.n_domains)
        ys = self.y.chunk(self.n_domains)
        return list(zip(xs, ys))


# Loop-level hyperparameters shared by every algorithm (DomainBed defaults unless stated).
COMMON_HPARAMS: dict[str, HParam] = {
    "lr": HParam(5e-5, "DomainBed ERM (Adam)", "learning rate of the classifier", ("log", 1e-5, 1e-3)),
    "weight_decay": HParam(0.0, "DomainBed", "Adam weight decay", ("log", 1e-6, 1e-2)),
    "dropout": HParam(0.0, "DomainBed resnet_dropout", "dropout before the linear head"),
}


class Algorithm(nn.Module):
    """Base class. Subclasses set `HPARAMS` and implement `losses`.

    Args:
        backbone: backbone name in `BACKBONES`.
        num_classes: K.
        num_domains: number of training domains.
        hparams: overrides of `COMMON_HPARAMS | HPARAMS` (unknown keys are errors).
        pretrained: "imagenet", a weights file, or None.
        freeze_bn: keep BatchNorm statistics frozen (None: the backbone's default).
    """

    HPARAMS: ClassVar[Mapping[str, HParam]] = {}
    #: True when the algorithm needs `batch.mask` (a masks folder or a mask source).
    needs_masks: ClassVar[bool] = False
    name: ClassVar[str] = "base"

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        num_domains: int,
        hparams: Mapping[str, Any] | None = None,
        pretrained: str | None = None,
        freeze_bn: bool | None = None,
    ) -> None:
        super().__init__()
        self.hparams = resolve(self.hparam_spec(), hparams, f"algorithm {self.name!r}")
        self.num_classes = num_classes
        self.num_domains = num_domains
        self.classifier = Classifier(
            build_backbone(backbone, pretrained, freeze_bn), num_classes, self.hparams["dropout"]
        )

    @classmethod
    def hparam_spec(cls) -> dict[str, HParam]:
        return {**COMMON_HPARAMS, **cls.HPARAMS}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per phase name. Created once; the loop checkpoints their state."""
        if not hasattr(self, "_optimizers"):
            self._optimizers = self.build_optimizers()
        return self._optimizers

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "classifier": torch.optim.Adam(
                self.classifier.parameters(),
                lr=self.hparams["lr"],
                weight_decay=self.hparams["weight_decay"],
            )
        }

    def phases(self, step: int) -> Sequence[str]:
        """Phases to run at this iteration, in order (each steps its own optimiser)."""
        return ("classifier",)

    def objective_start(self) -> int:
        """First step (0-based) at which the algorithm trains on its whole objective.

        Steps before it are a warm-up of another objective (ALIGN: DRE alone, then the masker
        alone). A checkpoint is "after the warm-up" when it holds at least one update of the whole
        objective (its step count exceeds this value); model selection considers only those, so a
        warm-up checkpoint is never reported under the algorithm's name, and the trainer refuses a
        run that would end before it. 0 for algorithms without a warm-up.
        """
        return 0

    @abstractmethod
    def losses(self, phase: str, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """Named loss terms for `phase`; must include the total `"loss"` to back-propagate."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> logits [B, K]."""
        return self.classifier(x)

    def eval_terms(self, x: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Extra per-sample evaluation scores (e.g. the masker's IoU); values [B]. Default none."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state to checkpoint (e.g. GroupDRO's weights are buffers already)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass
