"""Masks for mask-supervised training, computed once per dataset and source and cached.

See docs/masks.md. Main entry points: `build_mask_folder`, `MASK_SOURCES`, `degrade_to_iou`,
`mask_iou` and `mask_quality_report`.
"""

from align.masks.build import MaskBuildError, build_mask_folder, compute_mask, read_record
from align.masks.degrade import (
    DEGRADATIONS, degrade_mask, degrade_to_iou, dilate_mask, erode_mask, shift_mask,
)
from align.masks.generic import GENERIC_DEFAULTS, generic_segmentation
from align.masks.layout import list_images, save_mask
from align.masks.quality import binarize, mask_iou, mask_quality_report
from align.masks.sources import MASK_SOURCES, MaskJob, MaskSource

__all__ = [
    "DEGRADATIONS", "GENERIC_DEFAULTS", "MASK_SOURCES", "MaskBuildError", "MaskJob", "MaskSource",
    "binarize", "build_mask_folder", "compute_mask", "degrade_mask", "degrade_to_iou",
    "dilate_mask", "erode_mask", "generic_segmentation", "list_images", "mask_iou",
    "mask_quality_report", "read_record", "save_mask", "shift_mask",
]
