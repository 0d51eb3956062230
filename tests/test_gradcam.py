"""Tests for the batched, differentiable Grad-CAM in `align.explain.gradcam`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torchvision.models import resnet18, resnet50

from align.explain.gradcam import (
    GradCAM,
    cam_from_activations,
    capture_activations,
    default_cam_layer,
    gradcam,
    gradcam_from_features,
    normalize_cam,
)
from align.models import BACKBONES, Classifier, build_backbone


def _captum():
    """captum.attr, or skip the test (captum is an optional test dependency)."""
    return pytest.importorskip("captum.attr")


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class HandNet(nn.Module):
    """conv 1x1 (1 -> 2 channels, identity activation) -> global average pool -> linear.

    With weights w = (1, 2), bias b = (0, -5) and head V = [[1, -2], [0.5, 1]] (no bias), on
    x = [[1, 2], [3, 4]]:
        A_0 = x        = [[ 1,  2], [3, 4]]
        A_1 = 2x - 5   = [[-3, -1], [1, 3]]
        pooled         = (2.5, 0)      -> logits = (2.5, 1.25), prediction = class 0
    d y_t / d A_c[i, j] = V[t, c] / 4 everywhere, so alpha = V[t] / 4:
        t = 0: alpha = (0.25, -0.5)  -> cam = 0.25 A_0 - 0.5 A_1  = [[1.75, 1.0], [0.25, -0.5]]
        t = 1: alpha = (0.125, 0.25) -> cam = 0.625 x - 1.25      = [[-0.625, 0], [0.625, 1.25]]
    """

    def __init__(self) -> None:
        super().__init__()
        self.cam_layer = nn.Conv2d(1, 2, kernel_size=1)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.cam_layer.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.cam_layer.bias.copy_(torch.tensor([0.0, -5.0]))
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.cam_layer(x).mean(dim=(2, 3)))


class SmallNet(nn.Module):
    """Conv trunk -> `cam_layer` -> non-linear conv head -> pool -> linear.

    The head is non-linear in the feature map, so d y / d A depends on A and on the head's
    weights: the second-order path of a loss on the map is not trivial.
    """

    def __init__(self, act: type[nn.Module] = nn.ReLU, in_ch: int = 3, classes: int = 5) -> None:
        super().__init__()
        self.cam_layer = nn.Sequential(
            nn.Conv2d(in_ch, 4, 3, padding=1), act(), nn.Conv2d(4, 6, 3, padding=1), act()
        )
        self.head = nn.Sequential(nn.Conv2d(6, 8, 1), nn.Softplus())
        self.fc = nn.Linear(8, classes)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.cam_layer(x)
        return features, self.fc(self.head(features).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


class WithParam(nn.Module):
    """Runs `model` with one parameter replaced by `value` (so gradcheck can vary it)."""

    def __init__(self, model: nn.Module, name: str, value: torch.Tensor) -> None:
        super().__init__()
        self.model, self.name, self.value = model, name, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, {self.name: self.value}, (x,))


X_HAND = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)


def _resnet(factory, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return factory(weights=None).eval()


# --------------------------------------------------------------------------------------------
# Known answers
# --------------------------------------------------------------------------------------------


def test_hand_computed_values():
    model, x = HandNet(), X_HAND.repeat(2, 1, 1, 1)
    target = torch.tensor([0, 1])
    raw = gradcam(model, model.cam_layer, x, target, normalize=False)
    expected_raw = torch.tensor([[[1.75, 1.0], [0.25, 0.0]], [[0.0, 0.0], [0.625, 1.25]]])
    torch.testing.assert_close(raw[:, 0], expected_raw)

    no_relu = gradcam(model, model.cam_layer, x, target, relu=False, normalize=False)
    expected_no_relu = torch.tensor([[[1.75, 1.0], [0.25, -0.5]], [[-0.625, 0.0], [0.625, 1.25]]])
    torch.testing.assert_close(no_relu[:, 0], expected_no_relu)

    # Min-max: t=0 divides by 1.75, t=1 by 1.25; without ReLU by 2.25 and 1.875 after shifting.
    normed = gradcam(model, model.cam_layer, x, target)
    expected_norm = torch.tensor([[[1.0, 4 / 7], [1 / 7, 0.0]], [[0.0, 0.0], [0.5, 1.0]]])
    torch.testing.assert_close(normed[:, 0], expected_norm)
    normed_no_relu = gradcam(model, model.cam_layer, x, target, relu=False)
    expected = torch.tensor([[[1.0, 2 / 3], [1 / 3, 0.0]], [[0.0, 1 / 3], [2 / 3, 1.0]]])
    torch.testing.assert_close(normed_no_relu[:, 0], expected)

    # target=None explains the prediction (class 0 for both samples).
    predicted = gradcam(model, model.cam_layer, x, normalize=False)
    torch.testing.assert_close(predicted[:, 0], expected_raw[:1].expand(2, -1, -1))


def test_cam_from_activations_matches_definition():
    acts, grads = torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6)
    expected = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)
    torch.testing.assert_close(cam_from_activations(acts, grads, relu=False), expected)
    torch.testing.assert_close(cam_from_activations(acts, grads), expected.clamp(min=0))
    with pytest.raises(ValueError, match="shape"):
        cam_from_activations(acts, grads[:, :2])


# --------------------------------------------------------------------------------------------
# Agreement with Captum
# --------------------------------------------------------------------------------------------


def test_matches_captum_layer_gradcam_resnet18():
    captum_attr = _captum()
    model = _resnet(resnet18)
    torch.manual_seed(1)
    x, target = torch.randn(4, 3, 96, 96), torch.tensor([3, 17, 256, 999])
    reference = captum_attr.LayerGradCam(model, model.layer4).attribute(
        x, target, relu_attributions=True
    )
    ours = gradcam(model, model.layer4, x, target, normalize=False)
    assert ours.shape == reference.shape == (4, 1, 3, 3)
    assert reference.abs().max() > 0  # the comparison is not between two zero maps
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)

    upsampled = gradcam(model, model.layer4, x, target, upsample=True)
    expected = captum_attr.LayerAttribution.interpolate(
        normalize_cam(reference), (96, 96), interpolate_mode="bilinear"
    )
    assert upsampled.shape == (4, 1, 96, 96)
    torch.testing.assert_close(upsampled, expected, atol=1e-5, rtol=0)
    assert upsampled.min() >= 0 and upsampled.max() <= 1


def test_inplace_op_after_layer_does_not_corrupt_the_map():
    # A conv followed by an in-place ReLU: the map must be that of the conv output (as Captum).
    captum_attr = _captum()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    )
    x, target = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    reference = captum_attr.LayerGradCam(model, model[0]).attribute(x, target)
    for create_graph in (False, True):
        ours = gradcam(
            model, model[0], x, target, relu=False, normalize=False, create_graph=create_graph
        )
        torch.testing.assert_close(ours.detach(), reference, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# Differentiability
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
def test_gradcheck_wrt_input_and_parameter(normalize):
    torch.manual_seed(0)
    model = SmallNet(act=nn.Tanh, in_ch=2, classes=3).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    target, weights = torch.tensor([0, 2]), torch.randn(2, 1, 4, 4, dtype=torch.float64)

    def loss_wrt_input(inp: torch.Tensor) -> torch.Tensor:
        cam = gradcam(model, model.cam_layer, inp, target, relu=False, normalize=normalize,
                      create_graph=True)
        return (cam * weights).sum()

    assert torch.autograd.gradcheck(loss_wrt_input, (x,), eps=1e-6, atol=1e-5)

    # A head weight: reaches the map only through d y / d A, i.e. the second-order path.
    head_w = model.head[0].weight.detach().clone().requires_grad_()

    def loss_wrt_param(w: torch.Tensor) -> torch.Tensor:
        wrapped = WithParam(model, "head.0.weight", w)
        cam = gradcam(wrapped, model.cam_layer, x.detach(), target, relu=False,
                      normalize=normalize, create_graph=True)
        return (cam * weights).sum()

    assert torch.autograd.gradcheck(loss_wrt_param, (head_w,), eps=1e-6, atol=1e-5)


def test_loss_on_normalised_map_trains_conv_weights():
    torch.manual_seed(0)
    model = SmallNet()
    x, target = torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 4])
    cam = gradcam(model, model.cam_layer, x, target, create_graph=True)
    mask = torch.zeros_like(cam)
    mask[..., :4] = 1.0
    F.mse_loss(cam, mask).backward()
    for conv in (model.cam_layer[0], model.cam_layer[2], model.head[0]):
        assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
        assert conv.weight.grad.abs().sum() > 0
    # Without create_graph the map is a plain (detached) tensor.
    assert not gradcam(model, model.cam_layer, x, target).requires_grad


def test_frozen_model_input_without_grad_and_no_grad_mode():
    model = HandNet().requires_grad_(False)
    expected = torch.tensor([[1.0, 4 / 7], [1 / 7, 0.0]])
    with torch.no_grad():
        for create_graph in (False, True):
            cam = gradcam(model, model.cam_layer, X_HAND, create_graph=create_graph)
            torch.testing.assert_close(cam[0, 0].detach(), expected)
        assert not torch.is_grad_enabled()  # the caller's grad mode is restored


# --------------------------------------------------------------------------------------------
# normalize_cam
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, 3.0, -2.0])
def test_normalize_constant_map_is_zero_with_finite_gradient(value):
    cam = torch.full((2, 5, 5), value, requires_grad=True)
    out = normalize_cam(cam)
    assert torch.equal(out, torch.zeros_like(out))
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(cam.grad).all()
    assert torch.equal(cam.grad, torch.zeros_like(cam.grad))


def test_normalize_mixed_batch_and_shapes():
    torch.manual_seed(0)
    cam = torch.stack([torch.zeros(4, 4), torch.rand(4, 4) * 7 - 2])
    cam.requires_grad_()
    out = normalize_cam(cam)
    assert torch.equal(out[0], torch.zeros(4, 4))
    assert out[1].min() == 0 and out[1].max() == 1
    torch.testing.assert_close(out[1], (cam[1] - cam[1].min()) / (cam[1].max() - cam[1].min()))
    out.sum().backward()
    assert torch.isfinite(cam.grad).all()
    torch.testing.assert_close(normalize_cam(cam.unsqueeze(1)), out.unsqueeze(1))
    with pytest.raises(ValueError):
        normalize_cam(torch.rand(4, 4))


# --------------------------------------------------------------------------------------------
# Hooks, batching, errors
# --------------------------------------------------------------------------------------------


class Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cam_layer = nn.Conv2d(3, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cam_layer(x)
        raise RuntimeError("boom")


@pytest.mark.parametrize("create_graph", [False, True])
def test_hooks_removed_after_success_and_after_exception(create_graph):
    model = SmallNet()
    gradcam(model, model.cam_layer, torch.randn(2, 3, 8, 8), create_graph=create_graph)
    assert not model.cam_layer._forward_hooks

    boom = Boom()
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="boom"):
            gradcam(boom, boom.cam_layer, torch.randn(2, 3, 8, 8), create_graph=create_graph)
        # The hook switched grad mode on before the failure; the caller's mode is back.
        assert not torch.is_grad_enabled()
    assert not boom.cam_layer._forward_hooks

    with pytest.raises(RuntimeError, match="boom"), capture_activations(boom.cam_layer):
        boom(torch.randn(1, 3, 8, 8))
    assert not boom.cam_layer._forward_hooks


def test_layer_running_twice_is_an_error():
    shared = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(shared, shared, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="ran 2 times"):
        gradcam(model, shared, torch.randn(1, 3, 6, 6))
    assert not shared._forward_hooks


def test_target_validation():
    model = HandNet()
    with pytest.raises(ValueError, match="lie in"):
        gradcam(model, model.cam_layer, X_HAND, torch.tensor([2]))
    with pytest.raises(ValueError, match="one per sample"):
        gradcam(model, model.cam_layer, X_HAND, torch.tensor([0, 1]))
    torch.testing.assert_close(
        gradcam(model, model.cam_layer, X_HAND.repeat(2, 1, 1, 1), 1),
        gradcam(model, model.cam_layer, X_HAND.repeat(2, 1, 1, 1), torch.tensor([1, 1])),
    )


def test_batched_equals_per_sample():
    # float64, so that the comparison tests the batching and not float32 rounding (which the
    # per-sample min-max normalisation would amplify).
    model = _resnet(resnet18).double()
    torch.manual_seed(2)
    x, target = torch.randn(4, 3, 64, 64, dtype=torch.float64), torch.tensor([5, 0, 42, 7])
    batched = gradcam(model, model.layer4, x, target, normalize=False)
    singles = torch.cat(
        [gradcam(model, model.layer4, x[i : i + 1], target[i : i + 1], normalize=False)
         for i in range(4)]
    )
    torch.testing.assert_close(batched, singles, atol=1e-6, rtol=0)

    torch.manual_seed(3)
    small, xs = SmallNet().double(), torch.randn(5, 3, 8, 8, dtype=torch.float64)
    for kw in ({"normalize": False, "create_graph": True}, {"upsample": (12, 12)}):
        batched = gradcam(small, small.cam_layer, xs, **kw)
        singles = torch.cat(
            [gradcam(small, small.cam_layer, xs[i : i + 1], **kw) for i in range(5)]
        )
        torch.testing.assert_close(batched.detach(), singles.detach(), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# Fast path, logits, models and default layers
# --------------------------------------------------------------------------------------------


def test_gradcam_from_features_shares_the_forward_pass():
    torch.manual_seed(0)
    model = SmallNet()
    x, y = torch.randn(3, 3, 8, 8), torch.tensor([1, 2, 3])
    features, logits = model.features_and_logits(x)
    cam = gradcam_from_features(features, logits, y, create_graph=True)
    torch.testing.assert_close(cam.detach(), gradcam(model, model.cam_layer, x, y))
    loss = F.cross_entropy(logits, y) + cam.mean()  # one backward through both terms
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())

    # Without create_graph the forward graph is still kept (default) for the caller's loss.
    features, logits = model.features_and_logits(x)
    gradcam_from_features(features, logits, y)
    F.cross_entropy(logits, y).backward()
    with pytest.raises(ValueError, match="require grad"):
        gradcam_from_features(features.detach(), logits, y)


def test_return_logits_keeps_graph_for_a_loss():
    torch.manual_seed(0)
    model = SmallNet()
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    cam, logits = gradcam(model, model.cam_layer, x, y, return_logits=True)
    torch.testing.assert_close(logits, model(x))
    F.cross_entropy(logits, y).backward()
    assert model.fc.weight.grad is not None
    assert cam.shape == (2, 1, 8, 8) and not cam.requires_grad


def test_model_that_sets_its_own_grad_mode():
    class OwnGradMode(HandNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():  # on exit restores whatever mode the caller had
                features = self.cam_layer(x)
            return self.fc(features.mean(dim=(2, 3)))

    model = OwnGradMode()
    cam = gradcam(model, model.cam_layer, X_HAND, normalize=False)
    torch.testing.assert_close(cam[0, 0], torch.tensor([[1.75, 1.0], [0.25, 0.0]]))


@pytest.mark.parametrize("factory", [resnet18, resnet50])
def test_torchvision_resnets_with_default_layer(factory):
    model = _resnet(factory)
    assert default_cam_layer(model) is model.layer4
    explainer = GradCAM(model)
    x = torch.randn(2, 3, 64, 64)
    cam = explainer(x)
    assert cam.shape == (2, 1, 2, 2)  # layer4 downsamples by 32
    assert torch.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert "ResNet" in repr(explainer)
    if factory is resnet18:  # one forward pass of resnet50 on CPU is enough for this test
        assert explainer(x, upsample=(32, 48)).shape == (2, 1, 32, 48)


def test_any_model_with_cam_layer_and_default_layer_errors():
    model = SmallNet()
    assert default_cam_layer(model) is model.cam_layer
    explainer = GradCAM(model, upsample=True)
    assert explainer(torch.randn(2, 3, 8, 8)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"Sequential.*layer="):
        default_cam_layer(nn.Sequential(nn.Conv2d(3, 3, 1)))


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_registered_backbone_hook_path_equals_training_path(name):
    """`gradcam` (hook on the default layer) and the losses' `gradcam_from_features` (the features
    the classifier returns) give the same maps for every backbone in the registry."""
    torch.manual_seed(0)
    model = Classifier(build_backbone(name, pretrained=None), 3).eval()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    hooked = gradcam(model, default_cam_layer(model), x, y, upsample=True)
    logits, feats = model.forward_with_features(x)
    direct = gradcam_from_features(feats, logits, y, upsample=(64, 64))
    assert hooked.shape == (2, 1, 64, 64)
    torch.testing.assert_close(hooked, direct, atol=1e-5, rtol=1e-5)
    assert (hooked.flatten(1).amax(1) > 0).all()  # a real map, not the all-zero fallback
