"""Explainers that produce the saliency maps the metrics score, chosen by name.

    explain(name, model, x, target=None, **kw) -> FloatTensor[B, 1, H, W]   (non-negative, detached)

- "gradcam" (default): the project's batched Grad-CAM (`align.explain.gradcam.gradcam`), upsampled
  to the input and min-max normalised. `layer` is a module or its dotted name; by default the
  model's `cam_layer` (or a torchvision ResNet's `layer4`), else its last `nn.Conv2d`.
- "input_gradient": Captum `Saliency`, |d logit_y / d x| reduced by a max over colour channels
  (Simonyan et al., 2014).
- "integrated_gradients": Captum `IntegratedGradients` from an all-zero baseline (the dataset mean
  for normalised input), |attribution| summed over colour channels; `n_steps` (default 32).

Captum is an optional dependency (`pip install align[captum]`); it is imported only when one of
its explainers is used. The model should be in eval mode; parameter gradients are not touched
(Captum and Grad-CAM take gradients with respect to the input / activations only).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from align.registry import Registry

__all__ = ["DEFAULT_EXPLAINER", "EXPLAINERS", "explain", "last_conv_layer"]

Explainer = Callable[..., Tensor]
EXPLAINERS: Registry[Explainer] = Registry("explainer")
DEFAULT_EXPLAINER = "gradcam"


def explain(
    name: str, model: nn.Module, x: Tensor, target: Tensor | None = None, **kw
) -> Tensor:
    """Saliency maps for a batch.

    Args:
        name: a name in `EXPLAINERS`.
        model: callable x -> logits [B, K].
        x: FloatTensor[B, 3, H, W].
        target: LongTensor[B]; None explains the predicted class.
        **kw: the explainer's own options (e.g. layer=..., n_steps=...).
    Returns:
        FloatTensor[B, 1, H, W], non-negative, detached.
    """
    fn = EXPLAINERS.get(name)
    x = x.detach()
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(dim=1)
    maps = fn(model, x, target, **kw)
    return _as_map(maps, x)


def _as_map(maps: Tensor, x: Tensor) -> Tensor:
    """Bring an explainer's output to FloatTensor[B, 1, H, W] at x's resolution."""
    maps = maps.detach()
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if maps.dim() != 4 or maps.shape[1] != 1 or maps.shape[0] != x.shape[0]:
        raise ValueError(f"explainer returned shape {tuple(maps.shape)}, expected [B, 1, H, W]")
    if maps.shape[-2:] != x.shape[-2:]:
        maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return maps


def _captum_attr():
    """Import `captum.attr` on first use so that Captum stays optional."""
    try:
        import captum.attr as attr
    except ImportError as err:
        raise ImportError(
            "this explainer needs Captum, an optional dependency: pip install align[captum]"
        ) from err
    return attr


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last `nn.Conv2d` in `model.modules()` order: Grad-CAM's usual layer for a CNN."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("model has no nn.Conv2d; pass layer=... to the gradcam explainer")
    return convs[-1]


@EXPLAINERS.register("gradcam")
def gradcam_explainer(
    model: nn.Module, x: Tensor, target: Tensor, *, layer: nn.Module | str | None = None, **kw
) -> Tensor:
    """Grad-CAM at `layer`; **kw go to `gradcam` (defaults here: upsample=True, normalize=True)."""
    # Imported here so that the metrics (and the Captum explainers) do not depend on align.explain.
    from align.explain.gradcam import default_cam_layer, gradcam

    if layer is None:
        try:
            layer = default_cam_layer(model)  # the model's `cam_layer`, or a ResNet's layer4
        except ValueError:
            layer = last_conv_layer(model)
    elif isinstance(layer, str):
        layer = model.get_submodule(layer)
    kw.setdefault("upsample", True)
    kw.setdefault("normalize", True)
    return gradcam(model, layer, x, target, **kw)


@EXPLAINERS.register("input_gradient")
def input_gradient(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """|gradient of the target logit w.r.t. x|, max over channels -> [B, 1, H, W]."""
    attr = _captum_attr()
    grads = attr.Saliency(model).attribute(x.clone().requires_grad_(True), target=target, abs=True)
    return grads.amax(dim=1, keepdim=True)


@EXPLAINERS.register("integrated_gradients")
def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    n_steps: int = 32,
    internal_batch_size: int | None = None,
) -> Tensor:
    """|Integrated gradients| from a zero baseline, summed over channels -> [B, 1, H, W].

    `internal_batch_size` bounds memory: Captum otherwise evaluates all B * n_steps points at once.
    """
    attr = _captum_attr()
    ig = attr.IntegratedGradients(model)
    attributions = ig.attribute(
        x.clone().requires_grad_(True),
        baselines=torch.zeros_like(x),
        target=target,
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
    )
    return attributions.abs().sum(dim=1, keepdim=True)
