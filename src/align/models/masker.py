"""ALIGN's masker M: image [B, 3, H, W] -> soft mask [B, 1, H, W] in [0, 1].

The paper describes only "a lightweight convolutional network"; this architecture is our choice:
a three-level U-Net-style encoder-decoder (stride-2 convolutions down, bilinear upsampling and
skip connections up, sigmoid output). With `width=8` (the default) it has ~27 k parameters (`width=16`: 107 k), far below the
classifier's (ResNet-18: 11 M; the quickstart's small CNN: 0.24 M).

    level  encoder                    decoder
    1/1    conv3x3(3->w) x2           concat(up(d2), e1) -> conv3x3(3w->w) -> conv1x1(w->1) -> sigmoid
    1/2    conv3x3 s2 (w->2w), conv   concat(up(e3), e2) -> conv3x3(6w->2w)
    1/4    conv3x3 s2 (2w->4w), conv  (bottleneck)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(max(1, cout // 8), cout),  # batch-independent: masks don't couple samples
        nn.ReLU(inplace=True),
    )


class Masker(nn.Module):
    """Lightweight encoder-decoder producing a soft mask at the input's resolution.

    Args:
        width: channels at full resolution (doubles at each level).
        init_bias: initial bias of the output logit; 0 starts every pixel at 0.5.
    """

    def __init__(self, width: int = 8, init_bias: float = 0.0) -> None:
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_block(3, w), _block(w, w))
        self.enc2 = nn.Sequential(_block(w, 2 * w, stride=2), _block(2 * w, 2 * w))
        self.enc3 = nn.Sequential(_block(2 * w, 4 * w, stride=2), _block(4 * w, 4 * w))
        self.dec2 = _block(6 * w, 2 * w)
        self.dec1 = _block(3 * w, w)
        self.out = nn.Conv2d(w, 1, 1)
        nn.init.constant_(self.out.bias, init_bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> mask logits [B, 1, H, W]."""
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear",
                                                align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear",
                                                align_corners=False), e1], 1))
        return self.out(d1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> soft mask [B, 1, H, W] in [0, 1]."""
        return torch.sigmoid(self.logits(x))
