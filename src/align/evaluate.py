"""Evaluate a trained run: accuracy and every explanation metric on each test split.

    evaluate_run("runs/align")                             ->  runs/align/evaluation.json
    evaluate_run("runs/align", EvalConfig(max_batches=1))  ->  the same on 1 batch per split

Everything the evaluation depends on is one `EvalConfig` (`align.evaluation_presets`), stored
resolved as evaluation.json's `config`: the preset applied, `metrics` the names evaluated,
`data`/`masks` the roots used, plus the checkpoint's `step` and the sample order's `order_seed`.

What is evaluated (protocol.json decides):

| protocol        | out-of-distribution (`role: ood`)  | in-domain (`role: in_domain`)                   |
|-----------------|------------------------------------|-------------------------------------------------|
| lodo            | held-out domains' `in` (test keys) | training domains' `out` (their validation split) |
| single_source   | other domains' `in` (test keys)    | the source domain's `out` (its validation split) |
| in_distribution | -                                  | every domain's `out` (test keys)                 |

The in-domain numbers of lodo/single_source come from the split that also selected the "best"
checkpoint, so they are slightly optimistic (DomainBed reports them the same way).

Per split: accuracy, and for every metric in `align.metrics.METRICS` its mean over the samples
with a defined score, n_valid and n_excluded; the mean per-fraction curve of every metric that
has one (insertion/deletion: p_y against the fraction of pixels moved; comprehensiveness /
sufficiency: the drop at each k) for figures; and the algorithm's own evaluation scores
(`Algorithm.eval_terms`, for ALIGN the masker's mask against the ground truth: `masker_iou`,
`masker_area`). Localisation metrics need ground-truth masks: with none they are skipped and
listed under `skipped_metrics`.

Explanations: the saliency maps scored are `explain(explainer, classifier, x, target=prediction)`:
by default the classifier's Grad-CAM (at its `cam_layer`) of the class it predicts, upsampled and
min-max normalised; or a Captum explainer by name. The faithfulness metrics track the probability
of the predicted class. `explain_class="label"` explains the ground-truth label instead (the
metrics still track the prediction), as DRE's insertion AUC does.

Examples: the first split's example images, with the maps scored on them, go to `examples.npz`
beside evaluation.json, which records it (`align.evaluation_examples`); the report draws its
figures from these files only.

Sample order and scoring: `align.evaluation_scores`.

Resumable: after each split the results so far go to `evaluation.partial.json` (atomically, the
examples to `examples.partial.npz`); a restart with the same evaluation config (checkpoint step
included; `device` and `data` may differ) skips the finished splits, a restart with another config
starts over. The examples file, then `evaluation.json`, are written last and the partial files
removed. An existing `evaluation.json` with the same config is returned as is (`overwrite=True`
recomputes); the config includes the mask root, so scoring against other masks recomputes. A
stored config that lacks a key (written before the field existed) counts as its default.

Named evaluations: `name="cue"` writes `evaluation-cue.json` (and `examples-cue.npz`) instead,
beside the main one. That is how the same run is scored against several mask sets, e.g. the
synthetic benchmark's cue masks (`EvalConfig(masks="data/cues", name="cue", metrics=[...])`):
localisation against the cue measures how much an explanation rests on the shortcut. `align
report` reads only `evaluation.json`.

Presets (`align.evaluation_presets.PRESETS`): `preset="dre_auc"` fixes the explainer, substrate,
metrics, their parameters and the explained class to reproduce a published protocol (here DRE's
insertion AUC) and writes `evaluation-dre_auc.json` (`name` defaults to the preset's).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Sequence

from . import __version__, io
from .evaluation_examples import intact
from .evaluation_presets import EvalConfig, build_metrics, json_metric_params, resolve_settings
from .evaluation_scores import ORDER_SEED, ProgressFn, score_splits
from .rundir import (EVALUATION_FILE, EVALUATION_FORMAT, EVALUATION_VERSION, PARTIAL_FILE,
                     RunFiles, evaluation_files)
from .training.device import resolve_device, run_device

__all__ = ["EVALUATION_FILE", "PARTIAL_FILE", "EvalConfig", "evaluate_run", "evaluation_files",
           "rebuild_folder"]

log = logging.getLogger(__name__)

#: Evaluation-config keys that may differ between a partial evaluation and its resumption: where
#: the computation runs, and where the (same) images are found.
RESUMABLE_KEYS = {"device", "data"}


def evaluate_run(run_dir: str | Path, config: EvalConfig = EvalConfig(), *,
                 overwrite: bool = False, progress: ProgressFn | None = None) -> dict:
    """Evaluate `run_dir` as `config` says; write and return evaluation.json (or its named file).

    Args:
        run_dir: a run directory (see `align.training.rundir`).
        config: what to evaluate and how (`EvalConfig`; its defaults: the main evaluation).
        overwrite: recompute even if the evaluation file exists with the same config.
        progress: see `align.evaluation_scores.ProgressFn`.
    Returns:
        The evaluation record: {"format", "version", "align_version", "config", "run",
        "skipped_metrics", "examples", "splits": {key: {...}}}.
    """
    from .api import load_run
    from .metrics import EXPLAINERS, METRICS, SUBSTRATES

    files = RunFiles(run_dir)
    config = resolve_settings(config.preset, config)
    config = dataclasses.replace(config, name=config.preset if config.name is None else config.name)
    names = evaluation_files(config.name)
    EXPLAINERS.get(config.explainer)  # a KeyError that names the choices, before any work
    SUBSTRATES.get(config.substrate)
    cfg, protocol = files.config(), files.protocol()
    if config.device is None:
        config = dataclasses.replace(config, device=str(run_device(cfg.get("device", "cpu"))))
    else:  # asked for: a GPU this machine lacks is an error that says so (not torch's traceback)
        resolve_device(config.device)
    run = load_run(files.path, checkpoint=config.checkpoint, device=config.device)
    folder = rebuild_folder(files, cfg, config.data, config.masks)
    metrics = _metric_names(config.metrics, METRICS, has_masks=folder.masks_root is not None)
    params = json_metric_params(config.metric_params)
    build_metrics(metrics, config.substrate, params)  # bad parameters fail here, before any work
    resolved = dataclasses.replace(
        config, metrics=metrics, metric_params=params or None,
        data=str(Path(folder.root).resolve()),
        masks=None if folder.masks_root is None else str(Path(folder.masks_root).resolve()))
    stored = {**resolved.to_json(), "step": run.step, "order_seed": ORDER_SEED}
    final, partial = files / names.json, files / names.partial
    if final.is_file() and not overwrite:
        try:
            old = io.read_json(final)
        except ValueError as e:
            raise ValueError(f"{e}; `overwrite` (--overwrite) recomputes it") from None
        # A file of another format version is recomputed, never read as if it were current.
        if _current(old) and _same_config(old.get("config", {}), stored):
            return old
    done, examples = ({}, None) if overwrite else _resume(partial, files / names.partial_examples,
                                                          stored)
    record = {
        "format": EVALUATION_FORMAT, "version": EVALUATION_VERSION, "align_version": __version__,
        "config": stored,
        "run": {"algorithm": cfg["algorithm"], "protocol": protocol["name"],
                "seed": cfg["seed"], "classes": run.classes},
        "skipped_metrics": [n for n in (config.metrics or METRICS.names()) if n not in metrics],
        "examples": examples,
        "splits": done,
    }
    score_splits(files, run, folder, cfg, protocol, record, metrics, progress,
                 (partial, files / names.partial_examples, names.examples))
    if record["examples"] is not None:
        os.replace(files / names.partial_examples, files / names.examples)
    io.write_json(final, record)
    partial.unlink(missing_ok=True)
    (files / names.partial_examples).unlink(missing_ok=True)  # a stale one (n_examples=0 now)
    return record


def _same_config(old: dict, new: dict) -> bool:
    defaults = EvalConfig().to_json()
    keys = (set(old) | set(new)) - RESUMABLE_KEYS
    return all(old.get(k, defaults.get(k)) == new.get(k, defaults.get(k)) for k in keys)


def _current(record: dict) -> bool:
    """Whether an evaluation record was written in this format and version."""
    return record.get("format") == EVALUATION_FORMAT and record.get("version") == EVALUATION_VERSION


def _resume(partial: Path, partial_examples: Path, config: dict) -> tuple[dict, dict | None]:
    """(finished splits, examples entry) of a partial evaluation with the same config and
    version, else ({}, None); an examples entry whose file is gone or another is dropped (its
    split is then scored again).

    The partial file is this module's own scratch record: one that cannot be read (cut short by
    a kill or a full disk) is started over, not an error."""
    if not partial.is_file():
        return {}, None
    try:
        old = io.read_json(partial)
    except ValueError as e:
        log.warning("%s; starting the evaluation over", e)
        return {}, None
    if not _current(old) or not _same_config(old.get("config", {}), config):
        return {}, None  # another version, checkpoint, explainer, ...: nothing in it is reusable
    examples = old.get("examples")
    return dict(old.get("splits", {})), examples if intact(partial_examples, examples) else None


def _metric_names(metrics: Sequence[str] | None, registry, has_masks: bool) -> list[str]:
    if metrics is None:
        return [n for n in registry.names() if has_masks or not registry.get(n).needs_gt_mask]
    names = list(dict.fromkeys(metrics))
    for n in names:
        if registry.get(n).needs_gt_mask and not has_masks:  # get: KeyError naming the choices
            raise ValueError(f"metric {n!r} needs ground-truth masks but the run has none")
    return names


def rebuild_folder(files: RunFiles, cfg: dict, data, masks):
    """The run's DomainFolder: same roots, domains and (skipped) images as in training.

    Images are not decoded here (fast); images that training skipped as unreadable (recorded in
    dataset.json) are left out so that splits.json matches the folder again.
    """
    from .data.folder import scan_domainbed

    recorded = files.dataset()
    root = _existing(data, cfg["data"], recorded["root"], what="image root", files=files)
    mask_root = None
    if masks is not None or cfg.get("masks") is not None:
        mask_root = _existing(masks, cfg.get("masks"), recorded.get("masks_root"),
                              what="mask root", files=files)
    folder = scan_domainbed(root, masks_root=mask_root, preset=cfg.get("dataset"),
                            domains=cfg.get("domains"), verify_images=False)
    skipped = set(recorded.get("skipped", []))
    if skipped:
        folder = dataclasses.replace(
            folder, samples=[s for s in folder.samples if s.path not in skipped],
            skipped=sorted(skipped))
    return folder


def _existing(override, configured, recorded, *, what: str, files: RunFiles) -> Path:
    candidates = [override] if override is not None else [configured, recorded]
    for c in candidates:
        if c is not None and Path(c).is_dir():
            return Path(c)
    tried = ", ".join(str(c) for c in candidates if c is not None)
    raise FileNotFoundError(
        f"{files.path}: the {what} of this run is not found (tried {tried}); pass its new "
        "location (--data / --masks)"
    )
