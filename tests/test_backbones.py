"""Backbones loaded from a local weights file (`pretrained: PATH`)."""

from __future__ import annotations

import pytest
import torch

from align.models.backbones import build_backbone


def test_a_local_torchvision_checkpoint_loads_into_a_resnet(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pt")  # with its ImageNet head, fc.*
    net = build_backbone("resnet18", pretrained=str(tmp_path / "r18.pt"))
    assert torch.equal(net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.save(build_backbone("smallcnn").state_dict(), tmp_path / "small.pt")
    with pytest.raises(ValueError, match="small.pt do not match"):
        build_backbone("resnet18", pretrained=str(tmp_path / "small.pt"))
