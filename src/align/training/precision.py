"""Numeric precision of training: float32, or mixed precision with bfloat16 or float16.

    precision: bf16        # in a training config (fp32 | bf16 | fp16)

Mixed precision runs the forward passes and the losses under `torch.autocast` on the run's
device: convolutions and matrix products compute in the low-precision type, reductions,
softmax and the cross-entropy stay in float32, and the parameters, their gradients and the
optimiser states stay float32 throughout. bfloat16 has float32's exponent range, so gradients
neither overflow nor underflow; float16 does not, so its losses are multiplied by a dynamic
scale before the backward pass and the gradients divided by it before the step
(`torch.amp.GradScaler`, which also skips a step whose gradients overflowed and lowers the
scale). The scaler's state is part of the checkpoint, so a resumed float16 run continues with
the scale it stopped at.

What must not lose precision is computed in float32 whatever the setting: the Grad-CAM maps
that enter losses (channel weighting, min-max normalisation: `explain.gradcam`, `maps.minmax`)
and the binary cross-entropy against a mask (`losses.soft_bce`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

from ..registry import Registry


@dataclass(frozen=True)
class PrecisionSpec:
    """A precision setting: the autocast type (None: plain float32) and whether losses are
    scaled (float16's narrow exponent range needs it)."""

    dtype: torch.dtype | None
    scaled: bool
    description: str


PRECISIONS: Registry[PrecisionSpec] = Registry("precision")
PRECISIONS.register("fp32")(PrecisionSpec(None, False, "float32 throughout (the default)"))
PRECISIONS.register("bf16")(PrecisionSpec(
    torch.bfloat16, False, "autocast to bfloat16 (GPUs from Ampere on; CPUs with AVX-512 BF16)"))
PRECISIONS.register("fp16")(PrecisionSpec(
    torch.float16, True, "autocast to float16 with loss scaling (older GPUs)"))


class Precision:
    """The runtime side of a precision setting on one device: autocast and loss scaling.

    Args:
        name: a name in `PRECISIONS`.
        device: the device the run computes on (autocast's device type comes from it).
    """

    def __init__(self, name: str, device: torch.device | str) -> None:
        self.name = name
        self.spec = PRECISIONS.get(name)
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if self.spec.scaled else None

    def autocast(self) -> ContextManager:
        """The context the forward passes and losses run in (a no-op for fp32)."""
        if self.spec.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.spec.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate `loss` (scaled for fp16)."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step `optimizer` (for fp16: unscale its gradients first; skip if they overflowed)."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)

    def update(self) -> None:
        """End of an iteration: adjust the loss scale once, after every phase has stepped."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

