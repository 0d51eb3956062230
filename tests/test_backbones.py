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


def test_offline_imagenet_download_says_so_and_names_the_local_file_option(monkeypatch):
    """Regression (issue 10): offline, the README's VLCS command ended in a 317-line URLError
    traceback that never mentioned `pretrained: PATH`."""
    import urllib.error

    import torch.hub

    from align.models.backbones import PretrainedWeightsUnavailable, build_backbone

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsUnavailable, match=r"resnet18 .*pretrained: /path"):
        build_backbone("resnet18", pretrained="imagenet")
