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
- "dre_blur": the blur of DRE's insertion AUC (and of RISE, whose evaluation code DRE copies):
  the kernel of `gkern(11, 5)`, which is nearly a box filter, applied with *zero* padding, so the
  5-pixel border fades towards zero (the mean colour for normalised input). See `gkern`.

`FILLS` holds what ALIGN's masker loss puts in place of removed pixels (its `fill` hyperparameter):
the same "zero" and "blur" functions, and "noise" (standard normal noise in the input space, drawn
from torch's global generator so that a checkpoint resumes it). Noise is not a substrate: the
metrics would then score each map against a different random image.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor

from align.registry import Registry

__all__ = [
    "FILLS", "SUBSTRATES", "BLUR_KERNEL", "BLUR_SIGMA", "DRE_KERNEL", "DRE_SIGMA", "gkern",
    "make_substrate",
]

# Each maps x: FloatTensor[B, C, H, W] to a tensor of the same shape.
SUBSTRATES: Registry[Callable[[Tensor], Tensor]] = Registry("substrate")
FILLS: Registry[Callable[[Tensor], Tensor]] = Registry("fill")

BLUR_KERNEL = 11
BLUR_SIGMA = 5.0
# DRE's insertion AUC: `klen = 11`, `ksig = 5` in dre/explanations/fidelity/evaluate_auc.py
# (tangli-udel/DRE, commit 4ea0588), the values of RISE's own evaluation notebook.
DRE_KERNEL = 11
DRE_SIGMA = 5.0
# scipy.ndimage.gaussian_filter's default `truncate`: its 1-D kernel has radius int(4 sigma + 0.5).
_SCIPY_TRUNCATE = 4.0


@FILLS.register("blur")
@SUBSTRATES.register("blur")
def blur(x: Tensor) -> Tensor:
    """Gaussian blur of each channel: kernel 11x11, sigma 5 (needs H, W > 5 for reflect padding)."""
    kernel, sigma = [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA]
    return TF.gaussian_blur(x, kernel_size=kernel, sigma=sigma)


@SUBSTRATES.register("dre_blur")
def dre_blur(x: Tensor) -> Tensor:
    """DRE's substrate: each channel convolved with `gkern(11, 5)`, zero padding of 5 pixels.

    DRE (dre/explanations/fidelity/evaluate_auc.py) blurs with
    `F.conv2d(x, kern, padding=klen // 2)`, `kern` of shape [3, 3, 11, 11] with `k` on the
    diagonal and zeros elsewhere: a per-channel convolution, written here as a grouped one (any
    channel count). conv2d pads with zeros, so near the border part of the kernel's mass falls
    outside the image and the pixel is pulled towards 0 (a corner keeps 30% of its value on a
    constant image); torchvision's "blur" pads by reflection and keeps constant images constant.
    """
    c = x.shape[1]
    k = gkern(DRE_KERNEL, DRE_SIGMA).to(device=x.device, dtype=x.dtype)
    weight = k.expand(c, 1, DRE_KERNEL, DRE_KERNEL)
    return F.conv2d(x, weight, padding=DRE_KERNEL // 2, groups=c)


def gkern(klen: int = DRE_KERNEL, nsig: float = DRE_SIGMA) -> Tensor:
    """DRE's (RISE's) blur kernel: a centred delta on a klen x klen grid, Gaussian-filtered.

    `gkern` in DRE's dre/explanations/fidelity/evaluation.py (copied from RISE's evaluation.py)
    is `scipy.ndimage.gaussian_filter(delta, nsig)` with scipy's defaults: a sampled Gaussian of
    radius int(4 * nsig + 0.5) (20 for nsig = 5), normalised to sum 1, and `mode="reflect"`
    boundaries (d c b a | a b c d | d c b a). With a radius of 20 on an 11-wide grid nearly all
    of the Gaussian's mass is folded back into the grid, so the result is almost flat: for
    (11, 5) every entry lies in [0.94, 1.07] / 121 (max/min = 1.14), a near box filter, unlike
    torchvision's truncated 11-tap Gaussian ("blur": max/min = 2.8). This function recomputes that
    kernel in torch: the filter is separable and so is the delta, so the kernel is the outer
    product of the 1-D filtered delta with itself.

    Returns:
        FloatTensor[klen, klen] (float64), summing to 1.
    """
    if klen < 1 or nsig <= 0:
        raise ValueError(f"need klen >= 1 and nsig > 0, got klen={klen}, nsig={nsig}")
    radius = int(_SCIPY_TRUNCATE * float(nsig) + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * offsets**2 / float(nsig) ** 2)
    weights = weights / weights.sum()
    # Output position i reads input position i + m for every offset m; "reflect" maps a position
    # p outside [0, klen) back by mirroring about the edges (period 2 * klen).
    pos = torch.arange(klen)[:, None] + torch.arange(-radius, radius + 1)[None, :]
    pos = pos.remainder(2 * klen)
    pos = torch.where(pos >= klen, 2 * klen - 1 - pos, pos)
    k1 = (weights[None, :] * (pos == klen // 2)).sum(dim=1)  # the filtered 1-D delta, [klen]
    return torch.outer(k1, k1)


@SUBSTRATES.register("mean")
def mean(x: Tensor) -> Tensor:
    """Every pixel set to its image's per-channel mean: [B, C, 1, 1] broadcast to [B, C, H, W]."""
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()


@FILLS.register("zero")
@SUBSTRATES.register("zero")
def zero(x: Tensor) -> Tensor:
    """Zeros in the input space given (the dataset mean colour for mean/std-normalised input)."""
    return torch.zeros_like(x)


@FILLS.register("noise")
def noise(x: Tensor) -> Tensor:
    """Standard normal noise in the input space, from torch's global generator (a fill only)."""
    return torch.randn_like(x)


def make_substrate(x: Tensor, kind: str | Tensor = "blur") -> Tensor:
    """Build the substrate for a batch.

    Args:
        x: FloatTensor[B, C, H, W].
        kind: a name in `SUBSTRATES` ("blur", "mean", "zero", "dre_blur"), or a tensor broadcastable to x's
            shape for a custom substrate (e.g. a fixed baseline image).
    Returns:
        FloatTensor[B, C, H, W], detached, same dtype and device as x.
    """
    if isinstance(kind, Tensor):
        return kind.to(device=x.device, dtype=x.dtype).expand_as(x).detach()
    with torch.no_grad():
        return SUBSTRATES.get(kind)(x.detach())
