"""Substrates: what a removed pixel is replaced with in the perturbation metrics.

All substrates live in the model's input space (the normalised image the model sees), because that
is where the perturbation is applied. Each substrate maps x: FloatTensor[B, C, H, W] to a tensor of
the same shape.

- "blur" (default): Gaussian blur, kernel 11, sigma 5 (torchvision's `gaussian_blur`, reflect
  padding). A blurred pixel keeps the local colour, so it is closer to the training distribution
  than a flat colour and the model's drop reflects lost detail rather than an odd patch (RISE,
  Petsiuk et al. 2018, starts its insertion curve from a blurred copy for that reason).
- "mean": each image's own per-channel mean colour.
- "zero": zeros in the given input space. For inputs normalised with the dataset mean and std this
  is the dataset mean colour, not black.
"""

from __future__ import annotations

from typing import Callable

import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from align.registry import Registry

__all__ = ["SUBSTRATES", "BLUR_KERNEL", "BLUR_SIGMA", "make_substrate"]

SUBSTRATES: Registry[Callable[[Tensor], Tensor]] = Registry("substrate")

BLUR_KERNEL = 11
BLUR_SIGMA = 5.0


@SUBSTRATES.register("blur")
def blur(x: Tensor) -> Tensor:
    """Gaussian blur of each channel: kernel 11x11, sigma 5 (needs H, W > 5 for reflect padding)."""
    kernel, sigma = [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA]
    return TF.gaussian_blur(x, kernel_size=kernel, sigma=sigma)


@SUBSTRATES.register("mean")
def mean(x: Tensor) -> Tensor:
    """Every pixel set to its image's per-channel mean: [B, C, 1, 1] broadcast to [B, C, H, W]."""
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()


@SUBSTRATES.register("zero")
def zero(x: Tensor) -> Tensor:
    """Zeros in the input space given (the dataset mean colour for mean/std-normalised input)."""
    return torch.zeros_like(x)


def make_substrate(x: Tensor, kind: str | Tensor = "blur") -> Tensor:
    """Build the substrate for a batch.

    Args:
        x: FloatTensor[B, C, H, W].
        kind: a name in `SUBSTRATES` ("blur", "mean", "zero"), or a tensor broadcastable to x's
            shape for a custom substrate (e.g. a fixed baseline image).
    Returns:
        FloatTensor[B, C, H, W], detached, same dtype and device as x.
    """
    if isinstance(kind, Tensor):
        return kind.to(device=x.device, dtype=x.dtype).expand_as(x).detach()
    with torch.no_grad():
        return SUBSTRATES.get(kind)(x.detach())
