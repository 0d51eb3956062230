"""Where masks come from. Each source turns one image (and its truth, when given) into a mask.

Sources are chosen by name from `MASK_SOURCES` and used by `build_mask_folder`, which walks the
images, calls `compute` once per image and caches the folder. A source object holds only plain
data (its parameters and, for ``folder``, a path table), so it can be sent to worker processes.

=================  ===========================================================================
``folder``         masks a user made elsewhere (e.g. with SAM, see docs/masks.md); only checked
                   and copied into the standard layout. Params: ``root`` (required).
``generic``        built-in task-blind segmentation of the image alone (`align.masks.generic`).
``ground_truth``   the dataset's own masks (``gt_root``), copied into the standard layout.
``degraded``       the truth made worse by a degradation (`align.masks.degrade`). Params:
                   ``kind`` and one of ``level``, ``target_iou``, or (shift only) ``dx``+``dy``.
=================  ===========================================================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from align.data.decode import load_mask, load_rgb, mask_array
from align.data.pairing import mask_stem, pair_masks
from align.masks.degrade import DEGRADATIONS, degrade_mask, search_level, shift_mask
from align.masks.generic import GENERIC_DEFAULTS, check_generic_params, generic_segmentation
from align.registry import Registry


@dataclass(frozen=True)
class MaskJob:
    """One image to make a mask for."""

    rel: str  # image path relative to the images root, POSIX ("domain/class/x.jpg")
    image_path: str
    gt_path: str | None
    seed: int  # per-image seed, from `layout.image_seed(run seed, rel)`


class MaskSource(ABC):
    """Base class: validated parameters plus a per-image `compute`.

    Subclasses set `defaults` (every accepted parameter with its default; a user parameter not
    listed there is an error) and `needs_gt`, and may override `check`, `prepare` and
    `inputs_fingerprint`.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    needs_gt: ClassVar[bool] = False

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"mask source {self.name!r} does not take parameter(s) {unknown}; "
                f"valid: {sorted(self.defaults) or 'none'}"
            )
        merged = {**self.defaults, **params}
        try:
            # Round-trip through JSON so what is compared against the cache is exactly what
            # gets recorded (tuples become lists, and so on).
            self.params: dict[str, Any] = json.loads(json.dumps(merged, sort_keys=True))
        except TypeError as e:
            raise TypeError(f"mask source {self.name!r}: parameters must be JSON values ({e})")
        self.check()

    def check(self) -> None:
        """Raise a ValueError naming the parameter when one is invalid."""

    def prepare(self, image_rels: list[str]) -> None:
        """Called once with the image list before any `compute`; may validate coverage."""

    def inputs_fingerprint(self) -> str | None:
        """A digest of inputs outside the image and truth folders, for the cache key."""
        return None

    @abstractmethod
    def compute(self, job: MaskJob, gt: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
        """(mask, extra per-image record). `gt` is the truth as uint8 0..255, or None."""


MASK_SOURCES: Registry[type[MaskSource]] = Registry("mask source")


def _register(name: str):
    """Register a source class under `name` and tell it its name (for error messages)."""

    def deco(cls: type[MaskSource]) -> type[MaskSource]:
        cls.name = name
        return MASK_SOURCES.register(name)(cls)

    return deco


@_register("folder")
class FolderSource(MaskSource):
    """User-provided masks: every image must have one at the same relative path."""

    defaults = {"root": None}

    def check(self) -> None:
        if not self.params["root"]:
            raise ValueError("mask source 'folder' needs params={'root': <masks folder>}")
        self.root = Path(self.params["root"]).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"mask folder {self.root} does not exist or is not a folder")
        # Absolute, so the cache key does not depend on the working directory.
        self.params["root"] = str(self.root)
        self.paths: dict[str, str] = {}

    def prepare(self, image_rels: list[str]) -> None:
        found = pair_masks(image_rels, self.root)
        self.paths = {rel: str(self.root / m) for rel, m in zip(image_rels, found)}

    def inputs_fingerprint(self) -> str | None:
        # Name and size of each mask used: cheap, and catches masks regenerated into the folder.
        items = [[mask_stem(rel), Path(p).stat().st_size] for rel, p in sorted(self.paths.items())]
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()

    def compute(self, job: MaskJob, gt: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
        # Soft values are kept: the training methods decide how to read them.
        return mask_array(load_mask(self.paths[job.rel])), {}


@_register("generic")
class GenericSource(MaskSource):
    """Task-blind segmentation of the image alone; see `align.masks.generic`."""

    defaults = dict(GENERIC_DEFAULTS)

    def check(self) -> None:
        check_generic_params(self.params)

    def compute(self, job: MaskJob, gt: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
        # `gt` is deliberately not used: the point of this source is that it never sees the task.
        image = np.asarray(load_rgb(job.image_path), dtype=np.uint8)
        return generic_segmentation(image, **self.params), {}


@_register("ground_truth")
class GroundTruthSource(MaskSource):
    """The dataset's own masks, copied (values unchanged) into the standard layout."""

    needs_gt = True

    def compute(self, job: MaskJob, gt: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
        assert gt is not None  # build_mask_folder refuses needs_gt sources without gt_root
        return gt, {}


def _number(params: dict[str, Any], key: str) -> float:
    """params[key] as a float, or a ValueError naming the key (bools and strings refused)."""
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"mask source 'degraded': {key} must be a number, got {value!r}")
    return float(value)


@_register("degraded")
class DegradedSource(MaskSource):
    """The truth binarised at half scale, then degraded; records the level used per image."""

    defaults = {"kind": None, "level": None, "target_iou": None, "dx": None, "dy": None}
    needs_gt = True

    def check(self) -> None:
        p = self.params
        if p["kind"] not in DEGRADATIONS:
            raise ValueError(
                f"mask source 'degraded' needs params['kind'] in {DEGRADATIONS.names()}, "
                f"got {p['kind']!r}"
            )
        given = [k for k in ("level", "target_iou") if p[k] is not None]
        has_offset = p["dx"] is not None or p["dy"] is not None
        if has_offset:
            if p["kind"] != "shift" or p["dx"] is None or p["dy"] is None:
                raise ValueError("'dx' and 'dy' go together, and only with kind='shift'")
            if any(not _number(p, k).is_integer() for k in ("dx", "dy")):
                raise ValueError(f"dx and dy must be whole pixels, got {p['dx']}, {p['dy']}")
            given.append("dx/dy")
        if len(given) != 1:
            raise ValueError(
                "mask source 'degraded' needs exactly one of 'level', 'target_iou' or "
                f"(shift only) 'dx'+'dy'; got {given or 'none'}"
            )
        if p["target_iou"] is not None and not 0.0 <= _number(p, "target_iou") <= 1.0:
            raise ValueError(f"target_iou must lie in [0, 1], got {p['target_iou']}")
        if p["level"] is not None:
            top = DEGRADATIONS.get(p["kind"]).max_level if p["kind"] == "blobs" else math.inf
            if not 0.0 <= _number(p, "level") <= top or math.isinf(p["level"]):
                raise ValueError(
                    f"{p['kind']} level must be a finite number in [0, {top}], got {p['level']}"
                )

    def compute(self, job: MaskJob, gt: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
        assert gt is not None  # build_mask_folder refuses needs_gt sources without gt_root
        p = self.params
        if p["target_iou"] is not None:
            mask, _, level = search_level(gt, p["target_iou"], p["kind"], job.seed)
            return mask, {"level": level}
        if p["dx"] is not None:
            return shift_mask(gt, int(p["dx"]), int(p["dy"])), {}
        return degrade_mask(gt, p["kind"], p["level"], job.seed), {"level": float(p["level"])}
