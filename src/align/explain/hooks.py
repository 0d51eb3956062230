"""Recording a layer's output during a forward pass, with a hook that is always removed.

Grad-CAM (`align.explain.gradcam`) explains a layer's output; this module captures it. A hook
left behind by a failed forward pass would record (and copy) every later output of the layer, so
the hook lives only inside a context manager.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn

__all__ = ["capture_activations", "forward_and_capture"]


@contextmanager
def capture_activations(
    layer: nn.Module, *, detach_upstream: bool = False
) -> Iterator[list[Tensor]]:
    r"""Record every output of ``layer`` produced while the context is open.

    The forward hook is removed on exit, whether the body succeeds or raises, so a failed
    forward pass never leaves a stray hook on the model. The rest of the network receives a
    *copy* of each recorded output (as Captum does), so an in-place operation downstream (e.g.
    ``nn.ReLU(inplace=True)``) cannot overwrite the recorded tensor; the copy is one feature
    map, negligible next to the forward pass.

    If an output does not require grad (a frozen model fed an input without grad) while grad
    mode is on, it is recorded as a detached leaf that requires grad, so that the logits can
    still be differentiated with respect to it.

    Args:
        layer (nn.Module): module whose output (a single tensor) is recorded.
        detach_upstream (bool, optional): record the output as a detached leaf and switch grad
            mode on from this layer onwards. Run the forward pass under ``torch.no_grad()`` and
            autograd then records only the part of the network after ``layer``, which is all
            that ``d logits / d output`` needs: the trunk's activations are not kept for a
            backward pass that will never reach them. The grad mode is restored when the
            caller's ``no_grad`` block exits. Default: ``False``.

    Yields:
        list[Tensor]: the recorded outputs, in call order; filled during the forward pass.
    """
    store: list[Tensor] = []

    def hook(module: nn.Module, inputs: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"Grad-CAM needs {type(module).__name__} to return a single tensor; "
                f"it returned {type(output).__name__}"
            )
        if detach_upstream:
            torch.set_grad_enabled(True)
        if torch.is_grad_enabled() and (detach_upstream or not output.requires_grad):
            output = output.detach().requires_grad_()
        store.append(output)
        return output.clone()  # a returned value replaces the module's output downstream

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def forward_and_capture(
    model: nn.Module, layer: nn.Module, x: Tensor, *, explain_only: bool
) -> tuple[Tensor, Tensor]:
    """One forward pass of ``model`` on ``x``: (output of ``layer`` [B, C, h, w], logits [B, K]).

    With ``explain_only`` (only the map is wanted: no second-order graph, no logits handed back)
    the trunk before ``layer`` runs without autograd recording; see `capture_activations`.
    Raises if ``layer`` does not run exactly once.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("Grad-CAM needs autograd; call it outside torch.inference_mode()")
    with torch.set_grad_enabled(not explain_only):
        with capture_activations(layer, detach_upstream=explain_only) as store:
            logits = model(x)
    if not isinstance(logits, Tensor):
        raise TypeError(f"model must return a logits tensor; got {type(logits).__name__}")
    if len(store) != 1:
        raise RuntimeError(
            f"{type(layer).__name__} ran {len(store)} times in one forward pass; Grad-CAM needs "
            "a layer that runs exactly once"
        )
    if explain_only and not logits.requires_grad:
        # The model set its own grad mode inside forward() and undid ours; fall back to an
        # ordinary forward pass with autograd on throughout.
        return forward_and_capture(model, layer, x, explain_only=False)
    return store[0], logits
