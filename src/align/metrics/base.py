"""The interface every explanation metric implements, its result type and shared helpers.

A metric is a small class constructed with its parameters and called on one batch:

    >>> metric = METRICS.get("comprehensiveness")(substrate="blur")
    >>> result = metric(model=model, x=x, saliency=s)          # doctest: +SKIP
    >>> result.values.shape                                     # doctest: +SKIP
    torch.Size([B])

Each metric class declares its metadata as class attributes (`name`, `direction`, `category`,
`needs_model`, `needs_gt_mask`) so the CLI, the report tables and the parametrised tests read them
from `METRICS` instead of keeping their own lists.

Shapes used throughout:
    x:        FloatTensor[B, 3, H, W], the normalised model input.
    saliency: FloatTensor[B, 1, h, w] or [B, h, w], any resolution (upsampled bilinearly to H, W).
    target:   LongTensor[B], the class whose probability is tracked (default: the model's
              prediction on the clean x).
    gt_mask:  FloatTensor[B, 1, H, W] or [B, H, W] in [0, 1], binarised at 0.5.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from align.registry import Registry

__all__ = [
    "METRICS",
    "Aggregate",
    "Metric",
    "MetricResult",
    "aggregate",
    "clean_prediction",
    "prepare_mask",
    "prepare_saliency",
    "register_metric",
    "target_probability",
]

METRICS: Registry[type["Metric"]] = Registry("metric")

DIRECTIONS = ("higher", "lower")
CATEGORIES = ("faithfulness", "localisation")

Model = Callable[[Tensor], Tensor]


@dataclass
class MetricResult:
    """What a metric returns for one batch.

    Attributes:
        values: FloatTensor[B], one score per sample; NaN where the score is not defined (for
            example an empty ground-truth mask).
        curves: FloatTensor[B, F] or None: the per-fraction quantity behind the score (drops in
            p_target for comprehensiveness/sufficiency, p_target itself for insertion/deletion).
        fractions: the F pixel fractions that index `curves`' second axis, or None.
        n_empty: how many samples had an empty ground-truth mask (localisation metrics only).
        extras: anything else worth keeping for figures, e.g. "target" LongTensor[B] and "p_clean"
            FloatTensor[B] for the faithfulness metrics.
    """

    values: Tensor
    curves: Tensor | None = None
    fractions: list[float] | None = None
    n_empty: int = 0
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n_valid(self) -> int:
        """Number of samples with a defined (non-NaN) score."""
        return int((~torch.isnan(self.values)).sum())

    @property
    def n_excluded(self) -> int:
        """Number of samples whose score is NaN and is left out of the mean."""
        return self.values.numel() - self.n_valid


@dataclass(frozen=True)
class Aggregate:
    """Mean over the valid samples of one metric (NaN when none is valid)."""

    mean: float
    n_valid: int
    n_excluded: int


def aggregate(
    results: Union[MetricResult, Tensor, Iterable[Union[MetricResult, Tensor]]],
) -> Aggregate:
    """Mean over valid (non-NaN) per-sample values, pooled over one or many batches.

    Pooling the per-sample values (rather than averaging per-batch means) keeps a small last batch
    from weighing as much as a full one.
    """
    if isinstance(results, (MetricResult, Tensor)):
        results = [results]
    parts = [r.values if isinstance(r, MetricResult) else r for r in results]
    if not parts:
        return Aggregate(mean=math.nan, n_valid=0, n_excluded=0)
    values = torch.cat([p.detach().reshape(-1).double().cpu() for p in parts])
    valid = ~torch.isnan(values)
    n_valid = int(valid.sum())
    mean = float(values[valid].mean()) if n_valid else math.nan
    return Aggregate(mean=mean, n_valid=n_valid, n_excluded=values.numel() - n_valid)


class Metric(ABC):
    """Base class: validates the inputs once, then hands them to `compute`.

    Subclasses set the metadata class attributes, take their parameters in `__init__` and
    implement `compute` with the same keyword arguments as `__call__`.
    """

    name: ClassVar[str]
    direction: ClassVar[str]  # "higher" or "lower": which way is better
    category: ClassVar[str]  # "faithfulness" or "localisation"
    needs_model: ClassVar[bool]
    needs_gt_mask: ClassVar[bool]

    def __call__(
        self,
        *,
        model: Model | None = None,
        x: Tensor | None = None,
        saliency: Tensor,
        target: Tensor | None = None,
        gt_mask: Tensor | None = None,
    ) -> MetricResult:
        if self.needs_model and (model is None or x is None):
            raise ValueError(f"metric {self.name!r} needs `model` and `x`")
        if self.needs_gt_mask and gt_mask is None:
            raise ValueError(f"metric {self.name!r} needs `gt_mask`")
        if x is not None and x.dim() != 4:
            raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
        if target is not None and x is not None and target.shape != (x.shape[0],):
            raise ValueError(f"target must be [B]={x.shape[0]}, got shape {tuple(target.shape)}")
        if self.needs_model:
            _warn_if_training(model)
        return self.compute(model=model, x=x, saliency=saliency, target=target, gt_mask=gt_mask)

    @abstractmethod
    def compute(
        self,
        *,
        model: Model | None,
        x: Tensor | None,
        saliency: Tensor,
        target: Tensor | None,
        gt_mask: Tensor | None,
    ) -> MetricResult:
        """The metric's per-sample values (inputs already checked by `__call__`)."""

    @classmethod
    def metadata(cls) -> dict[str, object]:
        """The declared metadata as a plain dict (for tables and docs)."""
        return {
            "name": cls.name,
            "direction": cls.direction,
            "category": cls.category,
            "needs_model": cls.needs_model,
            "needs_gt_mask": cls.needs_gt_mask,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: check the declared metadata and register the class under `cls.name`."""
    for attr in ("name", "direction", "category", "needs_model", "needs_gt_mask"):
        if not hasattr(cls, attr):
            raise TypeError(f"{cls.__name__} does not declare `{attr}`")
    if cls.direction not in DIRECTIONS:
        raise ValueError(f"{cls.__name__}.direction must be one of {DIRECTIONS}")
    if cls.category not in CATEGORIES:
        raise ValueError(f"{cls.__name__}.category must be one of {CATEGORIES}")
    return METRICS.register(cls.name)(cls)


def prepare_saliency(saliency: Tensor, size: Sequence[int]) -> Tensor:
    """Return the maps as a detached FloatTensor[B, 1, H, W] at `size` = (H, W).

    Coarse maps (e.g. a 7x7 Grad-CAM) are upsampled bilinearly, as Grad-CAM itself does, so that
    pixel fractions refer to input pixels. Non-finite maps are refused: a NaN would silently take
    an arbitrary rank in the pixel ordering.
    """
    s = saliency.detach()
    if s.dim() == 3:
        s = s.unsqueeze(1)
    if s.dim() != 4 or s.shape[1] != 1:
        raise ValueError(f"saliency must be [B, 1, h, w] or [B, h, w], got {tuple(saliency.shape)}")
    if not torch.is_floating_point(s):
        s = s.float()
    if not bool(torch.isfinite(s).all()):
        raise ValueError("saliency contains NaN or inf values")
    if tuple(s.shape[-2:]) != tuple(size):
        s = F.interpolate(s, size=tuple(size), mode="bilinear", align_corners=False)
    return s


def prepare_mask(gt_mask: Tensor) -> Tensor:
    """Binarise ground-truth masks at 0.5 -> BoolTensor[B, 1, H, W] (`>= 0.5` counts as inside)."""
    m = gt_mask.detach()
    if m.dim() == 3:
        m = m.unsqueeze(1)
    if m.dim() != 4 or m.shape[1] != 1:
        raise ValueError(f"gt_mask must be [B, 1, H, W] or [B, H, W], got {tuple(gt_mask.shape)}")
    return m >= 0.5


def _warn_if_training(model: Model) -> None:
    # Dropout / batch-norm in training mode make every forward pass different, so the batched and
    # per-example results would disagree and scores would be noisy.
    if isinstance(model, torch.nn.Module) and model.training:
        warnings.warn(
            "model is in training mode; call model.eval() before computing metrics",
            stacklevel=3,  # point at the caller of Metric.__call__
        )


def target_probability(
    model: Model, x: Tensor, target: Tensor, max_batch: int | None = None
) -> Tensor:
    """Softmax probability of `target` under `model`, in chunks of at most `max_batch` inputs.

    Args:
        x: FloatTensor[N, C, H, W].
        target: LongTensor[N].
    Returns:
        FloatTensor[N].
    """
    step = max_batch or x.shape[0]
    out = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], step):
            logits = model(x[start : start + step])
            probs = torch.softmax(logits, dim=1)
            out.append(probs.gather(1, target[start : start + step, None]).squeeze(1))
    return torch.cat(out)


def clean_prediction(
    model: Model, x: Tensor, target: Tensor | None, max_batch: int | None = None
) -> tuple[Tensor, Tensor]:
    """p_target(x) and the target itself (the argmax class when `target` is None).

    Returns:
        (FloatTensor[B] probabilities, LongTensor[B] target).
    """
    step = max_batch or x.shape[0]
    with torch.inference_mode():
        logits = torch.cat([model(x[i : i + step]) for i in range(0, x.shape[0], step)])
    probs = torch.softmax(logits, dim=1)
    if target is None:
        target = probs.argmax(dim=1)
    target = target.to(device=probs.device, dtype=torch.long)
    return probs.gather(1, target[:, None]).squeeze(1), target
