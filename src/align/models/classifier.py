"""The classifier f: a backbone, global average pooling and a linear head.

`forward_with_features` returns the logits together with the last block's feature map, so a loss
that needs Grad-CAM reuses the clean forward pass instead of running a second one.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbones import Backbone


class Classifier(nn.Module):
    """Backbone + pooling + linear head.

    Args:
        backbone: a `Backbone` (feature map [B, C, h, w]).
        num_classes: K.
        dropout: dropout before the head (DomainBed's `resnet_dropout`, 0 by default).
    """

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.out_channels, num_classes)
        self.num_classes = num_classes

    @property
    def cam_layer(self) -> nn.Module:
        """The layer Grad-CAM reads by default (the backbone's last convolutional block)."""
        return self.backbone.cam_layer

    def head_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] -> logits [B, K]."""
        return self.head(self.dropout(feats.mean(dim=(2, 3))))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, 3, H, W] -> (logits [B, K], features [B, C, h, w])."""
        feats = self.backbone(x)
        return self.head_from_features(feats), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_from_features(self.backbone(x))
