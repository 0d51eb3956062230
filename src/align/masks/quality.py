"""How good is a mask: IoU against the truth, for one mask or a whole folder."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from align.data.decode import DataError, load_mask, mask_array
from align.data.pairing import index_masks, mask_stem, pair_masks
from align.maps import iou


def binarize(mask: Any) -> np.ndarray:
    """A mask as a bool array: "object" where the value is at least half of full scale.

    Accepted: bool; uint8 on the 0..255 scale (so >= 128 is object); floats on the 0..1 scale
    (>= 0.5). Other integer types are refused because 0/1 and 0..255 conventions cannot be told
    apart from the dtype, and guessing wrong silently empties the mask. Torch tensors are accepted.
    """
    if hasattr(mask, "detach"):  # a torch tensor; avoid importing torch just for isinstance
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return mask
    if mask.dtype == np.uint8:
        return mask >= 128
    if np.issubdtype(mask.dtype, np.floating):
        if mask.size and (np.nanmin(mask) < 0.0 or np.nanmax(mask) > 1.0):
            raise ValueError(
                f"float masks must lie in [0, 1], got values {np.nanmin(mask)}..{np.nanmax(mask)}"
            )
        return mask >= 0.5
    raise TypeError(
        f"unsupported mask dtype {mask.dtype}: use bool, uint8 (0..255) or float (0..1)"
    )


def mask_iou(a: Any, b: Any) -> float:
    """Intersection over union (`align.maps.iou`) of two masks after binarising each at half scale.

    Two empty masks give 1.0: both say "no object here", which is full agreement; this keeps a
    degraded copy of an empty mask (which stays empty) at the IoU of an identical copy, and keeps
    the mean IoU of a folder from being dragged down by images without objects. Shapes must match.
    """
    a, b = binarize(a), binarize(b)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    # As a batch of one; ascontiguousarray copies only views torch cannot wrap (negative strides).
    a_t, b_t = (torch.from_numpy(np.ascontiguousarray(m))[None] for m in (a, b))
    return float(iou(a_t, b_t, empty=1.0)[0])


def summarise_ious(per_image: dict[str, float | None]) -> tuple[float | None, dict[str, float]]:
    """(mean IoU over images, mean IoU per domain); domain = first path component.

    Images whose IoU is None (no truth) are left out; the mean is None when none has one.
    """
    by_domain: dict[str, list[float]] = {}
    for rel, iou in per_image.items():
        if iou is not None:
            by_domain.setdefault(PurePosixPath(rel).parts[0], []).append(iou)
    values = [v for vs in by_domain.values() for v in vs]
    mean = float(np.mean(values)) if values else None
    return mean, {d: float(np.mean(vs)) for d, vs in sorted(by_domain.items())}


def mask_quality_report(mask_root: str | os.PathLike, gt_root: str | os.PathLike) -> dict:
    """Compare every ground-truth mask under `gt_root` with its counterpart under `mask_root`.

    Masks are paired by relative path without extension (`align.data.pairing`). Every truth mask
    needs exactly one counterpart (one `DataError` lists those without); masks without a truth are
    only counted (`n_extra`), since a mask folder may cover more images than the truth does.

    Returns ``{"n": int, "mean_iou": float, "mean_iou_per_domain": {domain: float},
    "per_image": {key: float}, "n_extra": int}`` with keys like ``"domain/class/stem"``.
    """
    mask_root, gt_root = Path(mask_root), Path(gt_root)
    truth_index = index_masks(gt_root)
    truths = [rel for stem in sorted(truth_index) for rel in truth_index[stem]]
    if not truths:
        raise DataError(f"no ground-truth masks found in {gt_root}")
    masks = pair_masks(truths, mask_root, what="ground-truth mask")
    per_image: dict[str, float] = {}
    for truth_rel, mask_rel in zip(truths, masks):
        pred = mask_array(load_mask(mask_root / mask_rel))
        truth = mask_array(load_mask(gt_root / truth_rel))
        if pred.shape != truth.shape:
            raise DataError(
                f"mask {mask_root / mask_rel} has shape {pred.shape} but its truth "
                f"{gt_root / truth_rel} has {truth.shape}"
            )
        per_image[mask_stem(truth_rel)] = mask_iou(pred, truth)
    mean, per_domain = summarise_ious(per_image)
    return {
        "mask_root": str(mask_root),
        "gt_root": str(gt_root),
        "n": len(per_image),
        "mean_iou": mean,
        "mean_iou_per_domain": per_domain,
        "per_image": per_image,
        "n_extra": len(set(index_masks(mask_root)) - set(per_image)),
    }
