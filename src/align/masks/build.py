"""Compute a mask folder once per dataset and source, and reuse it afterwards.

`build_mask_folder` writes ``OUT/<domain>/<class>/<stem>.png`` for every image plus
``OUT/mask_source.json``. The JSON's ``key`` block (source, parameters, seed and digests of the
image list, the truth masks and any source inputs) is the cache key: a later call with the same
key returns the folder untouched; a different key is an error unless ``overwrite=True``.

The folder appears whole or not at all: everything is written into a hidden sibling
``.OUT.tmp-*`` and renamed into place at the end; on any error the sibling is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from align.data.decode import load_mask, mask_array
from align.data.pairing import pair_masks
from align.errors import UserError
from align import io
from align.io import install_dir, temp_dir_beside, write_json
from align.masks.layout import (
    image_seed, image_size, list_images, mask_rel_path, save_mask, to_uint8_mask,
)
from align.masks.quality import mask_iou, summarise_ious
from align.masks.sources import MASK_SOURCES, MaskJob, MaskSource

RECORD_NAME = "mask_source.json"
# Bump when the same key would produce different masks (an algorithm change).
FORMAT_VERSION = 1

Progress = Callable[[int, int], None]


class MaskBuildError(UserError, RuntimeError):
    """Computing the mask of one image failed; the message names the image."""


def compute_mask(source: MaskSource, job: MaskJob) -> tuple[np.ndarray, float | None, dict]:
    """(uint8 mask, IoU with the truth or None, extra record) for one image; checks sizes."""
    size = image_size(job.image_path)
    gt = mask_array(load_mask(job.gt_path)) if job.gt_path is not None else None
    if gt is not None and gt.shape != size:
        raise ValueError(
            f"ground-truth mask {job.gt_path} is {gt.shape[1]}x{gt.shape[0]} but its image "
            f"{job.image_path} is {size[1]}x{size[0]}"
        )
    mask, extra = source.compute(job, gt)
    mask = to_uint8_mask(mask)
    if mask.shape != size:
        raise ValueError(
            f"mask source {source.name!r} gave a {mask.shape} mask for the {size} image "
            f"{job.image_path}"
        )
    return mask, (mask_iou(mask, gt) if gt is not None else None), extra


def _run_job(source: MaskSource, job: MaskJob, out_dir: str) -> tuple[str, float | None, dict]:
    """Compute and write one mask; errors are re-raised naming the image."""
    try:
        mask, iou, extra = compute_mask(source, job)
        save_mask(Path(out_dir) / mask_rel_path(job.rel), mask)
    except Exception as e:  # re-raised with the image named; the cause is kept in the chain
        raise MaskBuildError(f"mask for {job.image_path} failed: {type(e).__name__}: {e}") from e
    return job.rel, iou, extra


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _files_digest(root: Path, rels: Iterable[str]) -> str:
    """Digest of (relative path, size) per file: cheap, and catches added/removed/replaced files."""
    return _digest([[rel, (root / rel).stat().st_size] for rel in rels])


def _check_roots(images_root: Path, out_root: Path, gt_root: Path | None) -> None:
    """Refuse an output folder that overlaps an input: overwriting it would delete inputs."""
    out = out_root.resolve()
    for name, root in (("images_root", images_root), ("gt_root", gt_root)):
        if root is None:
            continue
        r = root.resolve()
        if out == r or r in out.parents or out in r.parents:
            raise ValueError(
                f"out_root {out_root} overlaps {name} {root}; choose a separate folder"
            )


def _key_differences(old: dict, new: dict) -> list[str]:
    diffs = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            if k == "params" and isinstance(old.get(k), dict):
                ks = sorted(p for p in set(old[k]) | set(new[k]) if old[k].get(p) != new[k].get(p))
                diffs.append("params " + ", ".join(
                    f"{p}: {old[k].get(p)!r} -> {new[k].get(p)!r}" for p in ks))
            elif k.endswith("digest"):
                diffs.append(f"{k} (the files changed)")
            else:
                diffs.append(f"{k}: {old.get(k)!r} -> {new.get(k)!r}")
    return diffs


def read_record(out_root: str | os.PathLike) -> dict:
    """The ``mask_source.json`` of a built mask folder."""
    path = Path(out_root) / RECORD_NAME
    try:
        return io.read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{out_root} is not a built mask folder (no {RECORD_NAME})"
        ) from None


def _reuse(out_root: Path, key: dict, overwrite: bool) -> bool:
    """True when `out_root` already holds this exact build; raises when it holds another."""
    if not out_root.exists():
        return False
    if not out_root.is_dir():
        raise FileExistsError(f"out_root {out_root} exists and is not a folder")
    if not any(out_root.iterdir()):
        return False
    if not (out_root / RECORD_NAME).is_file():
        # Never delete a folder we did not write, whatever `overwrite` says.
        raise FileExistsError(
            f"out_root {out_root} is a non-empty folder without {RECORD_NAME}; refusing to touch it"
        )
    try:
        record = read_record(out_root)
    except ValueError:
        if overwrite:
            return False
        raise
    old_key = record.get("key", {})
    if old_key != key:
        if overwrite:
            return False
        diffs = "; ".join(_key_differences(old_key, key))
        raise FileExistsError(
            f"mask folder {out_root} was built differently ({diffs}); "
            "pass overwrite=True to rebuild it, or choose another out_root"
        )
    missing = [e["mask"] for e in record.get("images", {}).values()
               if not (out_root / e["mask"]).is_file()]
    if missing and not overwrite:
        raise FileNotFoundError(
            f"mask folder {out_root} is incomplete ({len(missing)} masks missing, e.g. "
            f"{missing[0]}); pass overwrite=True to rebuild it"
        )
    return not missing


def _results(
    source: MaskSource, jobs: list[MaskJob], out_dir: Path, workers: int,
) -> Iterator[tuple[str, float | None, dict]]:
    """Run the jobs, serially or on worker threads, yielding results in job order.

    Threads rather than processes: the heavy parts (SLIC, PIL codecs, numpy) release the GIL,
    which gave ~1.5x on 2 cores for ``generic``, while a worker process would first spend
    seconds importing the package (and torch) and fork is unsafe once torch threads run.
    Results do not depend on `workers`: each image's randomness comes from its own seed.
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _run_job(source, job, str(out_dir))
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="masks")
    try:
        yield from pool.map(lambda job: _run_job(source, job, str(out_dir)), jobs)
    finally:
        # On an error, drop the queued work instead of finishing it before re-raising.
        pool.shutdown(wait=True, cancel_futures=True)


def build_mask_folder(
    images_root: str | os.PathLike,
    out_root: str | os.PathLike,
    source: str,
    *,
    gt_root: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Path:
    """Write one PNG mask per image of `images_root` into `out_root` from mask source `source`.

    Args:
        images_root: ``<domain>/<class>/<image>`` tree.
        out_root: folder to create; masks go to the images' relative paths with ``.png``.
        source: a name in ``MASK_SOURCES`` (folder, generic, ground_truth, degraded).
        gt_root: the truth masks (same layout, any image extension). Required by
            ``ground_truth`` and ``degraded``; for other sources it adds IoUs to the record.
        params: the source's parameters (see `align.masks.sources`); defaults filled in.
        seed: run seed; each image's random choices use a hash of (seed, relative path).
        overwrite: replace a mask folder built with a different key (never a foreign folder).
        progress: called as ``progress(done, total)`` after each image.
        workers: worker threads; None = min(4, CPU count); 1 = serial. Same result either way.

    Returns `out_root`. Reuses it without computing anything when its key matches.
    """
    images_root, out_root = Path(images_root), Path(out_root)
    gt_root = Path(gt_root) if gt_root is not None else None
    _check_roots(images_root, out_root, gt_root)
    src = MASK_SOURCES.get(source)(params)
    if src.needs_gt and gt_root is None:
        raise ValueError(f"mask source {source!r} needs gt_root (the ground-truth masks folder)")
    rels = list_images(images_root)
    gt_paths = [gt_root / m for m in pair_masks(rels, gt_root)] if gt_root is not None else None
    src.prepare(rels)
    key = {
        "format": FORMAT_VERSION,
        "source": source,
        "params": src.params,
        "seed": int(seed),
        "images_digest": _files_digest(images_root, rels),
        "gt_digest": _digest([[p.relative_to(gt_root).as_posix(), p.stat().st_size]
                              for p in gt_paths]) if gt_paths is not None else None,
        "source_inputs_digest": src.inputs_fingerprint(),
    }
    if _reuse(out_root, key, overwrite):
        return out_root

    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    jobs = [
        MaskJob(rel, str(images_root / rel), str(gt_paths[i]) if gt_paths else None,
                image_seed(seed, rel))
        for i, rel in enumerate(rels)
    ]
    tmp = temp_dir_beside(out_root)
    try:
        images: dict[str, dict] = {}
        for done, (rel, iou, extra) in enumerate(_results(src, jobs, tmp, workers), 1):
            images[rel] = {"mask": mask_rel_path(rel), "iou": iou, **extra}
            if progress is not None:
                progress(done, len(jobs))
        write_json(tmp / RECORD_NAME, _record(key, images_root, gt_root, images))
        # Another process may have finished the same build meanwhile: then keep theirs.
        if not _reuse(out_root, key, overwrite):
            install_dir(tmp, out_root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_root


def _record(key: dict, images_root: Path, gt_root: Path | None, images: dict) -> dict:
    mean, per_domain = summarise_ious({rel: e["iou"] for rel, e in images.items()})
    return {
        "key": key,
        "source": key["source"],
        "params": key["params"],
        "seed": key["seed"],
        "images_root": str(images_root.resolve()),
        "gt_root": str(gt_root.resolve()) if gt_root is not None else None,
        "created_unix": time.time(),
        "n_images": len(images),
        "mean_iou": mean,
        "mean_iou_per_domain": per_domain,
        "images": images,
    }
