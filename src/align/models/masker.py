"""ALIGN's masker M: image [B, 3, H, W] -> soft mask [B, 1, H, W] in [0, 1].

The paper describes only "a lightweight convolutional network"; this architecture is our choice:
a U-Net-style encoder-decoder that works at half the input resolution and upsamples its output
bilinearly to the input size (a soft mask needs no finer detail, and half resolution quarters the
cost). Stride-2 convolutions go down, bilinear upsampling and skip connections come back up,
GroupNorm (batch-independent, so one image's mask never depends on the others in its batch),
sigmoid output.

    level  encoder                        decoder
    1/2    conv3x3 s2 (3->w), conv(w->w)  concat(up(d4), e2) -> conv3x3(3w->w) -> conv1x1(w->1)
    1/4    conv3x3 s2 (w->2w), conv       concat(up(e8), e4) -> conv3x3(6w->2w)
    1/8    conv3x3 s2 (2w->4w), conv      (bottleneck)
    1/1    bilinear upsampling of the logits, sigmoid

With `width=8` (the default) it has ~27 k parameters and ~6 M multiply-adds per 64 px image; the
classifier's are 11 M / 1.8 G (ResNet-18 at 224 px) or 61 k / 5 M (the quickstart's small CNN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(max(1, cout // 8), cout),
        nn.ReLU(inplace=True),
    )


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class Masker(nn.Module):
    """Lightweight encoder-decoder producing a soft mask at the input's resolution.

    Args:
        width: channels at the first level (doubling at each level below).
        init_bias: initial bias of the output logit; 0 starts every pixel near 0.5.
    """

    def __init__(self, width: int = 8, init_bias: float = 0.0) -> None:
        super().__init__()
        w = width
        self.enc2 = nn.Sequential(_block(3, w, stride=2), _block(w, w))
        self.enc4 = nn.Sequential(_block(w, 2 * w, stride=2), _block(2 * w, 2 * w))
        self.enc8 = nn.Sequential(_block(2 * w, 4 * w, stride=2), _block(4 * w, 4 * w))
        self.dec4 = _block(6 * w, 2 * w)
        self.dec2 = _block(3 * w, w)
        self.out = nn.Conv2d(w, 1, 1)
        nn.init.constant_(self.out.bias, init_bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> mask logits [B, 1, H, W]."""
        e2 = self.enc2(x)
        e4 = self.enc4(e2)
        e8 = self.enc8(e4)
        d4 = self.dec4(torch.cat([_up(e8, e4), e4], 1))
        d2 = self.dec2(torch.cat([_up(d4, e2), e2], 1))
        return _up(self.out(d2), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> soft mask [B, 1, H, W] in [0, 1]."""
        return torch.sigmoid(self.logits(x))
