"""ALIGN's masker M: image [B, 3, H, W] -> soft mask [B, 1, H, W] in [0, 1].

The paper describes only "a lightweight convolutional network"; this architecture is our choice:
a small encoder-decoder that works at a quarter of the input resolution and upsamples its output
bilinearly to the input size (a soft mask needs no finer detail; the Grad-CAM it guides has
1/8 to 1/32 of the input's resolution). A 4x4 stride-4 convolution cuts the image into patches
(no full- or half-resolution layer), a stride-2 convolution goes down once more, and the coarse
features come back up by bilinear upsampling added to the 1/4-resolution ones (an additive skip,
after a 1x1 projection). GroupNorm (batch-independent: one image's mask never depends on the
others in its batch), sigmoid output.

    level  encoder                                   decoder
    1/4    conv4x4 s4 (3->2w), conv3x3(2w->2w)  ->   up(conv1x1(e8): 4w->2w) + e4 -> conv3x3(2w->2w)
                                                       -> conv1x1(2w->1)
    1/8    conv3x3 s2 (2w->4w), conv3x3(4w->4w)      (bottleneck)
    1/1    bilinear upsampling of the logits (x4), sigmoid

With `width=8` (the default) it has ~20 k parameters and ~2.3 M multiply-adds per 64 px image
(the classifier: 11 M / 1.8 G for ResNet-18 at 224 px, 61 k / 5 M for the quickstart's small CNN).
Why (docs/align.md, "The masker's architecture"): the earlier masker (a U-Net at half resolution,
27 k parameters, 6 M multiply-adds) cost as much as the small CNN it guides, and its
full-resolution decoder most of an ALIGN iteration's time on a CPU; this one reaches the same
masker-only known answers (`benchmarks/masker_convergence.py`) at about a quarter of the time.

Bilinear upsampling is written as two matrix products (`resize_bilinear`), which give
`F.interpolate(mode="bilinear", align_corners=False)`'s values (to float rounding) and on a CPU
are several times faster, backward included.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def _block(cin: int, cout: int, stride: int = 1, patch: bool = False) -> nn.Sequential:
    """conv-GroupNorm-ReLU: a 3x3 convolution (padding 1), or with `patch` a 4x4 stride-4 one
    that cuts the image into non-overlapping patches."""
    conv = (nn.Conv2d(cin, cout, 4, stride=4, bias=False) if patch
            else nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False))
    return nn.Sequential(
        conv,
        nn.GroupNorm(max(1, cout // 8), cout),
        nn.ReLU(inplace=True),
    )


@functools.lru_cache(maxsize=32)
def _interpolation_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """[n_out, n_in] weights of 1-D linear interpolation with half-pixel centres
    (`align_corners=False`): output i samples the input at (i + 0.5) n_in / n_out - 0.5, clamped
    to the edges. Cached: built as an ordinary tensor even when first asked for under
    `torch.inference_mode()` (an inference tensor could not be saved for a later backward)."""
    with torch.inference_mode(False):
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5).clamp(min=0)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = src - lo
        rows = torch.arange(n_out)
        out = torch.zeros(n_out, n_in, dtype=torch.float64)
        out.index_put_((rows, lo), 1 - frac, accumulate=True)
        out.index_put_((rows, hi), frac, accumulate=True)
        return out.float().to(device)


def resize_bilinear(z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resizing of maps z [B, C, h, w] to [B, C, H, W] = `size`, as
    `F.interpolate(z, size, mode="bilinear", align_corners=False)` (no antialiasing): rows, then
    columns, each a product with a fixed interpolation matrix."""
    rows = _interpolation_matrix(z.shape[-2], size[0], z.device)
    cols = _interpolation_matrix(z.shape[-1], size[1], z.device)
    return rows.to(z.dtype) @ z @ cols.to(z.dtype).T


class Masker(nn.Module):
    """Lightweight encoder-decoder producing a soft mask at the input's resolution.

    Args:
        width: half the channels at 1/4 resolution (2w there, 4w at 1/8).
        init_bias: initial bias of the output logit; 0 starts every pixel near 0.5.
    """

    def __init__(self, width: int = 8, init_bias: float = 0.0) -> None:
        super().__init__()
        w = width
        self.enc4 = nn.Sequential(_block(3, 2 * w, patch=True), _block(2 * w, 2 * w))
        self.enc8 = nn.Sequential(_block(2 * w, 4 * w, stride=2), _block(4 * w, 4 * w))
        self.lateral = nn.Conv2d(4 * w, 2 * w, 1)
        self.dec4 = _block(2 * w, 2 * w)
        self.out = nn.Conv2d(2 * w, 1, 1)
        nn.init.constant_(self.out.bias, init_bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> mask logits [B, 1, H, W]."""
        e4 = self.enc4(x)
        e8 = self.enc8(e4)
        d4 = self.dec4(resize_bilinear(self.lateral(e8), e4.shape[-2:]) + e4)
        return resize_bilinear(self.out(d4), x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> soft mask [B, 1, H, W] in [0, 1]."""
        return torch.sigmoid(self.logits(x))
