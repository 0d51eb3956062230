"""Batched, differentiable Grad-CAM (Selvaraju et al., ICCV 2017) in plain torch.

Grad-CAM explains the logit ``y_t`` of class ``t`` with a feature map ``A`` (``[B, C, h, w]``)
taken from a convolutional layer::

    alpha_c = mean_{i,j} d y_t / d A_c[i, j]          # one weight per channel
    cam     = ReLU( sum_c alpha_c * A_c )             # [B, h, w]

Everything here is written so that it can sit *inside* a training loss: with
``create_graph=True`` the map is a differentiable function of the model's parameters (the
gradient ``d y_t / d A`` is itself differentiated, i.e. second-order autograd), so a penalty on
the map trains the model.

Pieces, from low to high level:

* :func:`cam_from_activations` and :func:`normalize_cam` (:func:`align.maps.minmax` for CAMs):
  pure tensor ops.
* :func:`gradcam_from_features`: the fast path for losses, when the model already returns its
  feature map next to the logits (one forward pass serves the cross-entropy *and* the map).
* :func:`capture_activations` (in :mod:`align.explain.hooks`, re-exported here): a context
  manager that records a layer's output with a forward hook and always removes the hook.
* :func:`gradcam` and :class:`GradCAM`: hook a layer, run one forward pass, build the map.

Batching. One ``torch.autograd.grad`` call on ``sum_b y_{b, t_b}`` yields every sample's own
gradient at once, because ``d y_{b'} / d A_b = 0`` for ``b' != b`` when the samples do not
interact. That holds whenever the sub-network *from the hooked layer to the logits* treats
samples independently: for a CNN in eval mode, and in train mode too for the usual head
(last conv block -> pooling -> linear, e.g. a torchvision ResNet hooked at ``layer4``). A
train-mode BatchNorm *after* the hooked layer couples the samples through the batch statistics,
and the map then contains those cross-sample terms. We deliberately do not switch the model to
eval mode: that would change the very forward pass (and BatchNorm running statistics) that the
training loss uses. Call ``model.eval()`` yourself, or hook a layer after the last
BatchNorm, if you need exact per-sample maps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from align.explain.hooks import capture_activations, forward_and_capture
from align.maps import minmax

__all__ = [
    "GradCAM",
    "cam_from_activations",
    "capture_activations",
    "default_cam_layer",
    "gradcam",
    "gradcam_from_features",
    "normalize_cam",
]


def cam_from_activations(activations: Tensor, gradients: Tensor, *, relu: bool = True) -> Tensor:
    r"""Grad-CAM map from a layer's activations and the gradients of the target logit.

    Args:
        activations (Tensor): layer output ``A``, shape ``[B, C, h, w]``.
        gradients (Tensor): ``d y_t / d A`` for each sample's target logit, same shape.
        relu (bool, optional): clamp negative evidence to zero, as in the paper.
            Default: ``True``.

    Returns:
        Tensor: ``sum_c alpha_c * A_c`` with ``alpha_c`` the spatial mean of the gradients of
        channel ``c``, shape ``[B, h, w]``. Differentiable in both arguments.
    """
    if activations.dim() != 4 or activations.shape != gradients.shape:
        raise ValueError(
            "activations and gradients must both have shape [B, C, h, w]; got "
            f"{tuple(activations.shape)} and {tuple(gradients.shape)}"
        )
    weights = gradients.mean(dim=(2, 3))  # [B, C]
    # einsum contracts the channels with a batched matmul instead of materialising the
    # [B, C, h, w] product of weights and activations.
    cam = torch.einsum("bc,bchw->bhw", weights, activations)
    return F.relu(cam) if relu else cam


def normalize_cam(cam: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Per-sample min-max normalisation into ``[0, 1]`` that never produces NaN.

    Each sample is normalised over all of its non-batch entries, so ``[B, h, w]`` and
    ``[B, 1, h, w]`` give the same values.

    A map whose spread ``max - min`` is at most ``eps`` (a constant map, including the all-zero
    map that ReLU gives when all evidence is negative) carries no spatial information; it is
    mapped to **all zeros with zero gradient**. We prefer that to dividing by ``max - min + eps``:
    the latter is also finite but, on a constant map, scales the incoming gradient by ``1/eps``
    (~1e8), which would blow up a training step. Every other map is divided by its exact spread,
    so its minimum becomes exactly 0 and its maximum exactly 1.

    Args:
        cam (Tensor): maps of shape ``[B, h, w]`` or ``[B, 1, h, w]``.
        eps (float, optional): spreads ``<= eps`` count as constant. Default: ``1e-8``.

    Returns:
        Tensor: normalised maps, same shape and dtype as ``cam``, values in ``[0, 1]``.
    """
    if cam.dim() not in (3, 4):
        raise ValueError(f"cam must have shape [B, h, w] or [B, 1, h, w]; got {tuple(cam.shape)}")
    return minmax(cam, eps=eps)


def _select_logits(logits: Tensor, target: Tensor | int | None) -> Tensor:
    """``logits[b, target[b]]`` for each sample, shape ``[B]``; ``None`` means the argmax."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [B, K]; got {tuple(logits.shape)}")
    batch, classes = logits.shape
    if target is None:
        # The prediction is a constant w.r.t. the parameters, so detaching loses nothing.
        target = logits.detach().argmax(dim=1)
    elif isinstance(target, int):
        target = torch.full((batch,), target, dtype=torch.long, device=logits.device)
    else:
        target = target.to(device=logits.device, dtype=torch.long).reshape(-1)
        if target.numel() != batch:
            raise ValueError(
                f"target must have {batch} entries (one per sample); got {target.numel()}"
            )
    # Checked here because an out-of-range index on CUDA is an opaque device-side assert.
    if bool(((target < 0) | (target >= classes)).any()):
        raise ValueError(f"target classes must lie in [0, {classes}); got {target.tolist()}")
    return logits.gather(1, target[:, None]).squeeze(1)


def gradcam_from_features(
    features: Tensor,
    logits: Tensor,
    target: Tensor | int | None = None,
    *,
    create_graph: bool = False,
    constant_weights: bool = False,
    relu: bool = True,
    normalize: bool = True,
    upsample: tuple[int, int] | None = None,
    retain_graph: bool | None = None,
) -> Tensor:
    r"""Grad-CAM from a feature map and the logits computed from it (no extra forward pass).

    This is the path for training losses: a model that returns its feature map next to its
    logits lets one forward pass serve both the cross-entropy and the map.

    Args:
        features (Tensor): feature map ``A``, shape ``[B, C, h, w]``, part of the autograd graph
            that produced ``logits`` and not modified in place since.
        logits (Tensor): class scores, shape ``[B, K]``.
        target (Tensor or int, optional): class to explain per sample, shape ``[B]`` (long), or
            one class for all samples; ``None`` explains the predicted class. Default: ``None``.
        create_graph (bool, optional): keep the map differentiable w.r.t. the parameters
            (second-order autograd); needed when the map enters a loss. With ``False`` the map is
            returned detached. Default: ``False``.
        constant_weights (bool, optional): with ``create_graph``, treat the channel weights
            ``alpha_c`` as constants: the map stays differentiable through the activations ``A``
            only and no second-order graph is built. This is what Captum's ``LayerGradCam``
            gives inside a loss (its gradients come from ``torch.autograd.grad`` without
            ``create_graph``), hence DRE's, GRADIA's and RES's Grad-CAM losses. Default: ``False``.
        relu (bool, optional): see :func:`cam_from_activations`. Default: ``True``.
        normalize (bool, optional): apply :func:`normalize_cam`. Default: ``True``.
        upsample (tuple[int, int], optional): bilinearly resize the map to this ``(H, W)``
            (``align_corners=False``), after normalisation; see :func:`gradcam`. Default: ``None``.
        retain_graph (bool, optional): keep the forward graph after computing the gradient.
            ``None`` keeps it, because the caller usually still back-propagates a loss on
            ``logits``; pass ``False`` to free it early when nothing else needs it.
            Default: ``None``.

    Returns:
        Tensor: maps of shape ``[B, 1, h, w]`` (or ``[B, 1, H, W]`` when upsampled), float32
        (float64 for float64 features) also when the features are float16 or bfloat16.
    """
    if not features.requires_grad:
        raise ValueError("features must require grad and be part of the graph that produced logits")
    retain = True if retain_graph is None else (retain_graph or create_graph)
    # Grad mode on: the selection and (with create_graph) the map must be recorded even when
    # the caller sits in a torch.no_grad() block, e.g. an evaluation loop.
    with torch.enable_grad():
        selected = _select_logits(logits, target)
        # Summing the per-sample logits gives each sample its own gradient in one backward
        # pass (see the module docstring for when samples are independent).
        (grads,) = torch.autograd.grad(
            selected.sum(), features, create_graph=create_graph and not constant_weights,
            retain_graph=retain,
        )
        # Without create_graph the gradients are constants; detaching the activations too
        # keeps the map (and its small graph) from pinning the forward graph.
        acts = features if create_graph else features.detach()
        # The map is built in float32 with autocast off, also under mixed-precision training:
        # the channel sum cancels positive against negative evidence (no ReLU in DRE's map) and
        # min-max normalisation divides by the spread, both of which low precision would round.
        dtype = torch.promote_types(acts.dtype, torch.float32)  # float64 stays float64
        with torch.autocast(features.device.type, enabled=False):
            cam = cam_from_activations(acts.to(dtype), grads.to(dtype), relu=relu).unsqueeze(1)
            if normalize:
                cam = normalize_cam(cam)
            if upsample is not None:
                # Bilinear weights are convex, so a normalised map stays in [0, 1].
                cam = F.interpolate(cam, size=tuple(upsample), mode="bilinear",
                                    align_corners=False)
    return cam


def gradcam(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    target: Tensor | int | None = None,
    *,
    relu: bool = True,
    normalize: bool = True,
    upsample: bool | tuple[int, int] = False,
    create_graph: bool = False,
    return_logits: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Batched Grad-CAM of ``model`` at ``layer``, one forward and one partial backward pass.

    The output of ``layer`` is captured with a forward hook (removed afterwards, even on error),
    the target logits are differentiated w.r.t. it for the whole batch at once, and the map is
    built by :func:`gradcam_from_features`. Grad mode is switched on for the call, so it also
    works under ``torch.no_grad()`` and when ``x`` does not require grad (not under
    ``torch.inference_mode()``). The model's train/eval mode is left untouched; see the module
    docstring about train-mode BatchNorm.

    When neither ``create_graph`` nor ``return_logits`` is set, only the map is needed, so the
    network before ``layer`` runs without autograd recording (``detach_upstream`` of
    :func:`capture_activations`): less memory and bookkeeping than recording the whole forward
    pass, as Captum does, for identical values.

    Normalisation happens at the layer's resolution, *before* upsampling: bilinear interpolation
    (``align_corners=False``) of a ``[0, 1]`` map stays in ``[0, 1]``, and the map's extremes are
    those of the layer's own grid (the upsampled maximum can be slightly below 1 because the
    output pixel centres need not fall on the input grid).

    Args:
        model (nn.Module): classifier returning logits of shape ``[B, K]``.
        layer (nn.Module): module of ``model`` whose output ``[B, C, h, w]`` is explained; it
            must run exactly once per forward pass. In-place operations after it are fine (see
            :func:`capture_activations`). See also :func:`default_cam_layer`.
        x (Tensor): input batch, shape ``[B, 3, H, W]`` (any shape ``model`` accepts).
        target (Tensor or int, optional): class per sample, shape ``[B]`` (long); ``None``
            explains the predicted class. Default: ``None``.
        relu (bool, optional): clamp negative evidence. Default: ``True``.
        normalize (bool, optional): per-sample min-max into ``[0, 1]``
            (:func:`normalize_cam`). Default: ``True``.
        upsample (bool or tuple[int, int], optional): ``True`` resizes to ``x``'s spatial size,
            a tuple to that ``(H, W)``, ``False`` keeps the layer's ``(h, w)``. Default: ``False``.
        create_graph (bool, optional): make the map differentiable w.r.t. the parameters (and
            ``x``), for use in a loss. Default: ``False`` (the map is detached).
        return_logits (bool, optional): also return the logits of the forward pass; their graph
            is kept so a loss on them can still be back-propagated. Default: ``False``.

    Returns:
        Tensor or tuple[Tensor, Tensor]: maps of shape ``[B, 1, h, w]`` (or ``[B, 1, H, W]``),
        and the logits ``[B, K]`` when ``return_logits`` is set.
    """
    if upsample is True:
        size: tuple[int, int] | None = (int(x.shape[-2]), int(x.shape[-1]))
    elif upsample is False or upsample is None:
        size = None
    else:
        size = (int(upsample[0]), int(upsample[1]))
    explain_only = not (create_graph or return_logits)
    features, logits = forward_and_capture(model, layer, x, explain_only=explain_only)
    cam = gradcam_from_features(
        features,
        logits,
        target,
        create_graph=create_graph,
        relu=relu,
        normalize=normalize,
        upsample=size,
        # Only keep the forward graph if something will still back-propagate through it.
        retain_graph=create_graph or return_logits,
    )
    return (cam, logits) if return_logits else cam


def default_cam_layer(model: nn.Module) -> nn.Module:
    r"""The layer Grad-CAM explains by default.

    Args:
        model (nn.Module): a model with a ``cam_layer`` attribute (an ``nn.Module``), or a
            torchvision ResNet.

    Returns:
        nn.Module: ``model.cam_layer`` if present, else ``model.layer4`` for a torchvision ResNet
        (its last convolutional block, the standard Grad-CAM choice).

    Raises:
        ValueError: for any other model; pass ``layer=`` explicitly.
    """
    layer = getattr(model, "cam_layer", None)
    if isinstance(layer, nn.Module):
        return layer
    # Imported here so that the pure-tensor functions do not pay for importing torchvision.
    from torchvision.models import ResNet

    if isinstance(model, ResNet):
        return model.layer4
    raise ValueError(
        f"no default Grad-CAM layer for {type(model).__name__}: give it a `cam_layer` attribute "
        "or pass layer=<the nn.Module to explain>"
    )


class GradCAM:
    r"""Grad-CAM bound to one ``(model, layer)`` pair, for repeated calls.

    Args:
        model (nn.Module): classifier returning logits ``[B, K]``.
        layer (nn.Module, optional): layer to explain; ``None`` uses
            :func:`default_cam_layer`. Default: ``None``.
        **defaults: keyword arguments of :func:`gradcam` used by every call unless overridden.

    Example:
        >>> cam = GradCAM(resnet18(weights=None).eval(), upsample=True)
        >>> maps = cam(images, labels)  # [B, 1, H, W] in [0, 1]
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None, **defaults: Any) -> None:
        self.model = model
        self.layer = default_cam_layer(model) if layer is None else layer
        self.defaults = defaults

    def __call__(
        self, x: Tensor, target: Tensor | int | None = None, **kw: Any
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Run :func:`gradcam` on ``x``; ``kw`` overrides the defaults given at construction."""
        return gradcam(self.model, self.layer, x, target, **{**self.defaults, **kw})

    def __repr__(self) -> str:
        return f"GradCAM(model={type(self.model).__name__}, layer={type(self.layer).__name__})"
