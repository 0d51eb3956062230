"""Joint image + mask transforms (torchvision.transforms.v2).

The image is wrapped as `tv_tensors.Image` and the mask as `tv_tensors.Mask`, and both go through
one v2 call per geometric op, so a random crop or flip draws its parameters once and applies them
to both. Colour ops and normalisation run afterwards on the image alone, so they never touch the
mask. All randomness comes from torch's global CPU generator (v2 draws with `torch.rand` & co.),
so seeding that generator before a call fixes the augmentation.

Interpolation. The image is resampled bilinearly with antialiasing (as DomainBed's PIL pipeline).
The mask is resampled with "nearest-exact": every output pixel takes the mask value at its own
centre, which keeps binary masks binary, keeps soft values (no blending, but no new values either),
and is centred on the same sampling grid as the bilinear image. v2's default for masks is the
legacy "nearest", which takes the top-left source pixel of each output cell and so shifts the mask
by up to half an output pixel against the image; we avoid that. The only remaining disagreement
between a binary mask and the image's (blurred) edge is at edge pixels themselves.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from align.data.decode import DataError, _to_mask, _to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MASK_INTERPOLATION = InterpolationMode.NEAREST_EXACT


def _resample(kernel: Callable[..., Any], inpt: Any, **kwargs: Any) -> Any:
    """Apply a resampling functional with the interpolation suited to the input's type."""
    if isinstance(inpt, tv_tensors.Mask):
        # Through the image kernel on a plain tensor: v2's mask kernel would use legacy nearest.
        out = kernel(inpt.as_subclass(torch.Tensor), interpolation=MASK_INTERPOLATION, **kwargs)
        return tv_tensors.wrap(out, like=inpt)
    return kernel(inpt, interpolation=InterpolationMode.BILINEAR, antialias=True, **kwargs)


class JointRandomResizedCrop(v2.RandomResizedCrop):
    """`v2.RandomResizedCrop` (same parameter draws) with nearest-exact resampling for masks."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resample(F.resized_crop, inpt, size=list(self.size), **params)

    _transform = transform  # the name torchvision < 0.21 calls


class JointResize(v2.Resize):
    """`v2.Resize` to a fixed (h, w) with nearest-exact resampling for masks."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resample(F.resize, inpt, size=list(self.size))

    _transform = transform


def image_to_tensor(image: Image.Image) -> tv_tensors.Image:
    """PIL image -> uint8 `tv_tensors.Image` [3, H, W] (non-RGB modes converted like `load_rgb`)."""
    if image.mode != "RGB":
        image = _to_rgb(image, "<image>")
    return F.to_image(image)


def mask_to_tensor(mask: Image.Image) -> tv_tensors.Mask:
    """PIL mask -> float32 `tv_tensors.Mask` [1, H, W] in [0, 1].

    "L" is divided by 255, 16-bit by 65535, "F" is taken as is (clamped to [0, 1]); other modes are
    first converted like `load_mask`.
    """
    m = _to_mask(mask, "<mask>")
    a = np.asarray(m, dtype=np.float32)
    if m.mode == "L":
        a = a / 255.0
    elif not np.isfinite(a).all():
        raise DataError("float mask contains NaN or infinite values")
    return tv_tensors.Mask(torch.from_numpy(np.clip(a, 0.0, 1.0)).unsqueeze(0))


class JointTransform:
    """Callable ``(image, mask | None) -> (x, m | None)``.

    Returns:
        x: float32 [3, size, size], normalised with `mean`/`std`.
        m: float32 [1, size, size] in [0, 1], or None when no mask was given.

    `geometric` ops receive image and mask together; `photometric` ops receive the uint8 image only,
    followed by conversion to float in [0, 1] and normalisation. Parameters are drawn in the same
    order with or without a mask, so a seed gives the same image either way.
    """

    def __init__(
        self,
        geometric: Sequence[Callable[..., Any]],
        photometric: Sequence[Callable[..., Any]],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.geometric = v2.Compose(list(geometric))
        to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        self.photometric = v2.Compose([*photometric, *to_float])

    def __call__(
        self, image: Image.Image, mask: Image.Image | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = image_to_tensor(image)
        if mask is None:
            x = self.geometric(x)
            return self.photometric(x).as_subclass(torch.Tensor), None
        m = mask_to_tensor(mask)
        if tuple(m.shape[-2:]) != tuple(x.shape[-2:]):
            raise DataError(
                f"mask is {m.shape[-1]}x{m.shape[-2]} but image is {x.shape[-1]}x{x.shape[-2]}"
            )
        x, m = self.geometric(x, m)
        x = self.photometric(x)
        return x.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"JointTransform(geometric={self.geometric}, photometric={self.photometric})"


def build_transform(size: int, train: bool, *, augment: bool = True) -> JointTransform:
    """DomainBed's transforms, made joint.

    Train with `augment`: RandomResizedCrop(size, scale=(0.7, 1.0)), RandomHorizontalFlip,
    ColorJitter(0.3, 0.3, 0.3, 0.3), RandomGrayscale(p=0.1), to float, ImageNet Normalize.
    Otherwise (eval, or train without augmentation as DomainBed's `data_augmentation=False`):
    Resize((size, size)), to float, Normalize. See the module docstring for mask interpolation.
    """
    if size < 1:
        raise ValueError(f"transform size must be positive, got {size}")
    if train and augment:
        return JointTransform(
            geometric=[JointRandomResizedCrop(size, scale=(0.7, 1.0)), v2.RandomHorizontalFlip()],
            photometric=[v2.ColorJitter(0.3, 0.3, 0.3, 0.3), v2.RandomGrayscale(p=0.1)],
        )
    return JointTransform(geometric=[JointResize((size, size))], photometric=[])


def denormalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Undo `Normalize`: [..., 3, H, W] normalised -> [..., 3, H, W] in (roughly) [0, 1]."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return x * s + m
