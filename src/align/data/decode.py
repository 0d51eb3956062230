"""Decoding images and masks the same way everywhere (scan, training, evaluation)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from align.errors import UserError


class DataError(UserError, ValueError):
    """A dataset folder, mask or split record that cannot be used as is; the message says where."""


# How many offending files a `DataError` lists before summarising the rest as a count.
MAX_LISTED = 20


def listing(items: list[str]) -> str:
    """The first `MAX_LISTED` items, one per indented line, then how many more there are."""
    shown = "\n  ".join(items[:MAX_LISTED])
    more = f"\n  ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"\n  {shown}{more}"


# Greyscale modes wider than 8 bits, which Pillow cannot convert to RGB/L without clipping.
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


# --------------------------------------------------------------------------------------- decoding


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image as 8-bit RGB.

    Greyscale is replicated to three channels; 16-bit ("I;16*", "I") is scaled from 0..65535 and
    float ("F") from 0..1; palette images go through their palette; CMYK/YCbCr/LAB use Pillow's
    conversion. Alpha is dropped without compositing (the colour under transparent pixels is kept),
    which is what torchvision's default loader, and hence DomainBed, does. EXIF orientation is not
    applied, also like DomainBed, so masks must be drawn on the stored pixel grid.
    """
    with Image.open(path) as im:
        return _to_rgb(im, path)


def _to_rgb(im: Image.Image, path: str | os.PathLike) -> Image.Image:
    if im.mode in _WIDE_GREY:
        # Pillow's own I->RGB conversion clips at 255 instead of scaling (16-bit turns white).
        g = np.rint(_wide_to_unit(im) * 255.0).astype(np.uint8)
        return Image.fromarray(g).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # avoids Pillow's byte-transparency warning; alpha dropped below
    for route in (("RGB",), ("RGBA", "RGB")):  # modes such as "La" reach RGB only through RGBA
        try:
            out = im
            for mode in route:
                out = out.convert(mode)
            return out
        except ValueError:
            continue
    raise DataError(f"{path}: cannot convert image mode {im.mode!r} to RGB")


def _wide_to_unit(im: Image.Image) -> np.ndarray:
    """16/32-bit integer (0..65535) or float (0..1) greyscale -> float32 [H, W] in [0, 1]."""
    a = np.asarray(im).astype(np.float32)
    if im.mode != "F":
        a = a / 65535.0
    return np.clip(np.nan_to_num(a), 0.0, 1.0)


def load_mask(path: str | os.PathLike) -> Image.Image:
    """Decode a mask as mode "L" (8-bit, 255 = fully on) or "F" (float in [0, 1]).

    8-bit sources stay "L" (the transform divides by 255). 16-bit ("I;16*", "I") becomes "F" divided
    by 65535; "F" is kept as is. Colour masks become "L" by the per-pixel channel maximum, so any
    coloured annotation counts as fully on (luminance would make pure red 0.3). Alpha channels are
    ignored: the mask is the colour/grey content, except in a mask whose colour/grey content is
    all zero while its alpha channel varies (an object drawn only as opacity): there the alpha
    channel is the mask, which would otherwise read as empty. Palette masks go through their
    palette colours.

    Raises:
        DataError: for an 8-bit mask whose only values are 0 and 1. That is almost always a boolean
            array saved without scaling; read on the 0..255 scale it would be "no object anywhere"
            and silently train against an empty mask.
    """
    with Image.open(path) as im:
        mask = _to_mask(im, path)
    if mask.mode == "L" and mask.getextrema()[1] == 1:
        raise DataError(
            f"mask {path} only holds the values 0 and 1; masks are read on a 0..255 scale, so "
            "save them multiplied by 255"
        )
    return mask


def mask_array(mask: Image.Image) -> np.ndarray:
    """A mask decoded by `load_mask` as a uint8 array (H, W) on the 0..255 scale.

    "L" is taken as is; "F" is clipped to [0, 1] (as training clips it) and rounded to 0..255.
    The mask tools (`align.masks`) work on these arrays.
    """
    if mask.mode == "F":
        unit = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
        return np.rint(unit * 255.0).astype(np.uint8)
    if mask.mode != "L":
        raise ValueError(f"mask_array takes load_mask's modes 'L' and 'F', got {mask.mode!r}")
    return np.asarray(mask, dtype=np.uint8)


def _to_mask(im: Image.Image, path: str | os.PathLike) -> Image.Image:
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        colour, alpha = np.asarray(rgba)[..., :3], np.asarray(rgba)[..., 3]
        if colour.max() == 0 and alpha.min() != alpha.max():
            return Image.fromarray(alpha)  # uint8 -> mode "L"
    if im.mode in ("L", "F"):
        return im.copy()
    if im.mode == "1":
        return im.convert("L")
    if im.mode in _WIDE_GREY:
        return Image.fromarray(_wide_to_unit(im))  # float32 -> mode "F"
    if im.mode in ("LA", "La"):
        return im.getchannel("L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    try:
        rgb = im.convert("RGB")
    except ValueError:
        raise DataError(f"{path}: cannot read a mask of image mode {im.mode!r}") from None
    return Image.fromarray(np.asarray(rgb).max(axis=2))  # uint8 -> mode "L"
