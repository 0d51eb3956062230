"""Pairing images with masks: the mask of ``ROOT/d/c/x.jpg`` is ``MASKS/d/c/x.<any extension>``.

One implementation for the dataset scanner (`align.data.folder`) and the mask tools
(`align.masks`), so a mask folder pairs the same way for training and for building or scoring
masks. Every problem is a `DataError` naming the files and the folder; all problems are listed
at once rather than the first alone.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from align.data.decode import DataError, listing


def mask_stem(rel: str) -> str:
    """The extension-free relative path that pairs an image with its mask (``d/c/x``)."""
    return str(PurePosixPath(rel).with_suffix(""))


def stem_clashes(rels: Iterable[str]) -> dict[str, list[str]]:
    """Stems shared by several paths (``x.jpg`` and ``x.png`` in one folder), with those paths."""
    by_stem: dict[str, list[str]] = defaultdict(list)
    for rel in rels:
        by_stem[mask_stem(rel)].append(rel)
    return {stem: sorted(found) for stem, found in by_stem.items() if len(found) > 1}


def index_masks(masks_root: Path, tops: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Mask stem -> the relative POSIX paths of the mask files with that stem (sorted).

    Args:
        masks_root: the folder of masks.
        tops: index only these top-level folders (the images' domains); None: the whole tree.
            Hidden files and folders are skipped; symlinked folders are followed.

    Raises:
        DataError: when `masks_root` is not a folder.
    """
    masks_root = Path(masks_root)
    if not masks_root.is_dir():
        raise DataError(f"masks root {masks_root} does not exist or is not a directory")
    index: dict[str, list[str]] = defaultdict(list)
    for top in [masks_root] if tops is None else [masks_root / t for t in tops]:
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.startswith(".") or not has_file_allowed_extension(f, IMG_EXTENSIONS):
                    continue
                rel = (Path(dirpath) / f).relative_to(masks_root).as_posix()
                index[mask_stem(rel)].append(rel)
    return dict(index)


def pair_masks(rels: Sequence[str], masks_root: Path, what: str = "image") -> list[str]:
    """The relative path under `masks_root` of the mask of each of `rels`, in order.

    Args:
        rels: relative POSIX paths of the images (or other masks) to pair.
        masks_root: the folder of masks; only its folders named by the first part of `rels`
            (their domains) are read.
        what: what `rels` are, for the messages ("image", "ground-truth mask").

    Raises:
        DataError: one error listing every path without a mask, with several candidate masks
            (``x.png`` and ``x.jpg``), or sharing its stem with another path (two images would
            share one mask).
    """
    masks_root = Path(masks_root)
    parts = [PurePosixPath(r).parts for r in rels]
    tops = None if any(len(p) < 2 for p in parts) else sorted({p[0] for p in parts})
    index = index_masks(masks_root, tops)
    clashes = stem_clashes(rels)
    problems, out = [], []
    for rel in rels:
        stem = mask_stem(rel)
        found = index.get(stem, [])
        expected = f"{masks_root / stem}.<png|jpg|...>"
        if stem in clashes:
            problems.append(f"{what}s {clashes[stem]} share the mask stem {expected}")
        elif not found:
            problems.append(f"no mask for {what} {rel}: expected {expected}")
        elif len(found) > 1:
            problems.append(f"{what} {rel} has {len(found)} candidate masks: {found}")
        else:
            out.append(found[0])
    if problems:
        n_bad = len(rels) - len(out)
        raise DataError(f"mask problems under {masks_root} ({n_bad} of {len(rels)} {what}s):"
                        + listing(sorted(set(problems))))
    return out
