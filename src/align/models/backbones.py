"""Feature extractors chosen by name, each exposing the layer used for Grad-CAM.

A backbone maps images [B, 3, H, W] to a feature map [B, C, h, w] (the output of its last
convolutional block, which is also its `cam_layer`). The classifier pools and classifies that map,
so one forward pass yields both the logits and the activations Grad-CAM needs.

`resnet18` / `resnet50` are torchvision's networks (no hand-written ResNet); `pretrained` is
"imagenet" (torchvision's weights, downloaded and cached by torchvision) or a path to a local state
dict. `smallcnn` is a 4-block CNN fast enough for the CPU quickstart.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..registry import Registry

BACKBONES: Registry = Registry("backbone")


class PretrainedWeightsUnavailable(UserError, ValueError):
    """ImageNet weights were asked for but could not be downloaded (e.g. offline)."""


class Backbone(nn.Module):
    """Base class: `forward(x [B,3,H,W]) -> features [B, out_channels, h, w]`.

    Attributes:
        out_channels: channels of the feature map.
        cam_layer: the module whose output is the feature map (Grad-CAM's default layer).
        freeze_bn: keep every BatchNorm in eval mode during training (DomainBed's default for
            ResNets: running statistics stay those of pre-training).
    """

    out_channels: int
    cam_layer: nn.Module

    def __init__(self, freeze_bn: bool = False) -> None:
        super().__init__()
        self.freeze_bn = freeze_bn

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def _load_local_weights(module: nn.Module, path: str | os.PathLike) -> None:
    """Load a local state dict (e.g. an ImageNet checkpoint copied to a cluster without internet).

    Keys of a torchvision classification head (`fc.*`) are ignored; any other mismatch is an error
    that names the file and the keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = module.load_state_dict(state, strict=False)
    # The head is new either way: a torchvision net's own fc is never in the file, after the
    # line above (the backbone drops that fc anyway).
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"weights in {path} do not match the backbone: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


class TorchvisionResNet(Backbone):
    """A torchvision ResNet without its pooling and fc layer; Grad-CAM layer = `layer4`."""

    def __init__(self, arch: str, pretrained: str | None, freeze_bn: bool) -> None:
        super().__init__(freeze_bn)
        import torchvision.models as tvm

        builder = getattr(tvm, arch)
        weights = None
        if pretrained == "imagenet":
            # torchvision's default (best) ImageNet weights for this architecture.
            weights = tvm.get_model_weights(arch).DEFAULT
        try:
            net = builder(weights=weights)
        except OSError as e:  # URLError, timeouts, no route: the download failed
            raise PretrainedWeightsUnavailable(
                f"could not download torchvision's ImageNet weights for {arch} ({weights.url}): "
                f"{type(e).__name__}: {e}. Without internet, copy that file to this machine and "
                "set `pretrained: /path/to/file.pth` in the config (or null for no weights)"
            ) from None
        if pretrained not in (None, "imagenet"):
            _load_local_weights(net, pretrained)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4,
        )
        self.out_channels = net.fc.in_features
        self.cam_layer = self.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class SmallCNN(Backbone):
    """Four conv blocks (conv3x3-BN-ReLU; strides 2, 2, 2, 1): 64 px -> 8x8 features.

    Small enough (~70 k parameters, ~5 M multiply-adds per 64 px image) for the CPU quickstart,
    deep enough that Grad-CAM at the last block (8x8 at 64 px) is spatially meaningful. Our choice;
    not from the paper.
    """

    def __init__(self, pretrained: str | None, freeze_bn: bool, width: int = 16) -> None:
        super().__init__(freeze_bn)
        if pretrained == "imagenet":
            raise ValueError("backbone 'smallcnn' has no ImageNet weights; use a local file or none")
        chans = [3, width, width * 2, width * 4, width * 4]
        strides = [2, 2, 2, 1]
        self.blocks = nn.Sequential(*[
            nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=strides[i], padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=False),
            )
            for i in range(4)
        ])
        self.out_channels = chans[-1]
        self.cam_layer = self.blocks[-1]
        if pretrained is not None:
            _load_local_weights(self, pretrained)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


@BACKBONES.register("resnet18")
def resnet18(pretrained: str | None = None, freeze_bn: bool = True) -> Backbone:
    return TorchvisionResNet("resnet18", pretrained, freeze_bn)


@BACKBONES.register("resnet50")
def resnet50(pretrained: str | None = None, freeze_bn: bool = True) -> Backbone:
    return TorchvisionResNet("resnet50", pretrained, freeze_bn)


@BACKBONES.register("smallcnn")
def smallcnn(pretrained: str | None = None, freeze_bn: bool = False) -> Backbone:
    return SmallCNN(pretrained, freeze_bn)


def build_backbone(name: str, pretrained: str | None = None, freeze_bn: bool | None = None) -> Backbone:
    """Build a registered backbone; `freeze_bn=None` keeps the backbone's own default."""
    builder = BACKBONES.get(name)
    kwargs = {} if freeze_bn is None else {"freeze_bn": freeze_bn}
    return builder(pretrained=pretrained, **kwargs)
