"""The algorithm contract.

An algorithm owns its networks and optimisers and, for every training iteration, names the phases
to run (`phases(step)`, e.g. `("classifier",)` for ERM or `("masker", "classifier")` for ALIGN's
alternation). For each phase the loop calls `losses(phase, batch, step)`, which returns the named
loss terms; `"loss"` is the one the loop back-propagates before stepping `optimizers()[phase]`.
The loop (not the algorithm) owns backward, stepping, NaN checks, logging and checkpoints.
`step_kind(step)` labels what an iteration computes, so that `align sweep --estimate` times one
iteration per kind (an algorithm whose cost changes over training says how).

This is DomainBed's `update(minibatches) -> dict` split in two so alternating schedules and
several optimisers fit the same loop.

The contract is enforced: `Algorithm` is an abstract base class (`abc.ABCMeta` with `nn.Module`),
so a subclass that leaves `losses` (or `MaskGuided.explanation`, ...) unimplemented cannot be
instantiated. `ALGORITHMS.register(name)` sets the class's `name`.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..hparams import HParam, resolve
from ..models import Classifier, build_backbone
from ..registry import Registry

ALGORITHMS: Registry = Registry("algorithm", sets_name=True)


@dataclass
class Batch:
    """One training minibatch, balanced over training domains.

    Attributes:
        x: images [B, 3, H, W], normalised, grouped by training domain with the same number of
            samples per domain (domain d is rows d*B/D .. (d+1)*B/D - 1).
        y: labels [B], int64.
        mask: masks [B, 1, H, W] in [0, 1] (annotations or a precomputed mask source); the trainer
            guarantees them to an algorithm whose `needs_masks` is true, None otherwise.
        n_domains: number of training domains D in the batch.
    """

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None = None
    n_domains: int = 1

    def per_domain(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Split into the per-domain minibatches [(x_d, y_d), ...] (equal sizes by construction)."""
        xs = self.x.chunk(self.n_domains)
        ys = self.y.chunk(self.n_domains)
        return list(zip(xs, ys))


# Loop-level hyperparameters shared by every algorithm (DomainBed defaults unless stated).
COMMON_HPARAMS: dict[str, HParam] = {
    "lr": HParam(5e-5, "DomainBed ERM (Adam)", "learning rate of the classifier", ("log", 1e-5, 1e-3),
                 bounds="(0, inf)"),
    "weight_decay": HParam(0.0, "DomainBed", "Adam weight decay", ("log", 1e-6, 1e-2),
                           bounds="[0, inf)"),
    "dropout": HParam(0.0, "DomainBed resnet_dropout", "dropout before the linear head",
                      bounds="[0, 1)"),
}


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode with no parameter gradients inside the block, its previous mode and
    `requires_grad` flags restored on exit, also on an exception.

    For a pass through a network that another phase trains (ALIGN's masker phase, SGT's saliency
    pass): BatchNorm keeps its statistics and autograd records no path to the parameters, so a
    later backward through the block's outputs leaves them without gradients even though the
    flags are restored by then.
    """
    was_training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


class Algorithm(nn.Module, metaclass=abc.ABCMeta):
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
    #: Whether the algorithm learns from `batch.mask` (see `needs_masks`).
    NEEDS_MASKS: ClassVar[bool] = False
    #: The fewest samples per training domain a batch may hold (`batch_size`); `check_run`
    #: refuses a run with fewer, before anything is written.
    MIN_DOMAIN_BATCH: ClassVar[int] = 1
    #: The registry name, set by `ALGORITHMS.register`.
    name: ClassVar[str] = ""

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
        self.hparams = self.resolve_hparams(hparams)
        self.num_classes = num_classes
        self.num_domains = num_domains
        self.classifier = Classifier(
            build_backbone(backbone, pretrained, freeze_bn), num_classes, self.hparams["dropout"]
        )

    @classmethod
    def hparam_spec(cls) -> dict[str, HParam]:
        """Every hyperparameter the algorithm has: the loop's shared ones and its own."""
        return {**COMMON_HPARAMS, **cls.HPARAMS}

    @classmethod
    def resolve_hparams(cls, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """The defaults overridden by `overrides`, checked (unknown keys, types, choices), without
        building any network."""
        return resolve(cls.hparam_spec(), overrides, f"algorithm {cls.name!r}")

    @classmethod
    def needs_masks(cls, hparams: Mapping[str, Any] | None = None) -> bool:
        """Whether training with these hyperparameters (overrides of the defaults) learns from
        masks. A question to the class, answered without building networks: the trainer asks it
        once, before anything is written, and refuses a run without masks; the algorithms then
        rely on `batch.mask`."""
        return cls.NEEDS_MASKS

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

    def step_kind(self, step: int) -> str:
        """What an iteration at `step` computes, as a label ("classifier", "masker+classifier"):
        iterations of one kind cost the same, so `align sweep --estimate` times one per kind.
        An algorithm whose iterations compute more at some steps than at others, beyond the
        phases they run, adds that here."""
        return "+".join(self.phases(step))

    @classmethod
    def objective_start(cls, hparams: Mapping[str, Any] | None = None) -> int:
        """First step (0-based) at which the algorithm, with these hyperparameters (overrides of
        the defaults), trains on its whole objective.

        Steps before it are a warm-up of another objective (ALIGN: DRE alone, then the masker
        alone). A checkpoint is "after the warm-up" when it holds at least one update of the whole
        objective (its step count exceeds this value); model selection considers only those, so a
        warm-up checkpoint is never reported under the algorithm's name, and the trainer (and a
        sweep, before it writes anything) refuses a run that would end before it. A question to
        the class, like `needs_masks`. 0 for algorithms without a warm-up.
        """
        return 0

    @abc.abstractmethod
    def losses(self, phase: str, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """Named loss terms for `phase`; must include the total `"loss"` to back-propagate."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> logits [B, K]."""
        return self.classifier(x)

    def eval_terms(self, x: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Extra per-sample evaluation scores (e.g. the masker's IoU); values [B]. Default none."""
        return {}
