"""Evaluate a trained run: accuracy and every explanation metric on each test split.

    evaluate_run("runs/align")  ->  writes runs/align/evaluation.json, returns its content

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

Sample order: each split is visited in a fixed seeded permutation (`ORDER_SEED`), so `max_batches`
takes a class-balanced-in-expectation subset (the samples are stored sorted by class) and a smaller
`max_batches` evaluates a prefix of a larger one.

Resumable: after each split the results so far go to `evaluation.partial.json` (atomically); a
restart with the same evaluation config (checkpoint step included) skips the finished splits, a
restart with another config starts over. `evaluation.json` is written last and the partial file
removed. An existing `evaluation.json` with the same config is returned as is (`overwrite=True`
recomputes); the config includes the mask root, so scoring against other masks recomputes.

Named evaluations: `name="cue"` writes `evaluation-cue.json` instead, beside the main one. That is
how the same run is scored against several mask sets, e.g. the synthetic benchmark's cue masks
(`evaluate_run(run, masks="data/cues", name="cue", metrics=[...localisation...])`): localisation
against the cue measures how much an explanation rests on the shortcut. `align report` reads only
`evaluation.json`.

Presets (`align.evaluation_presets.PRESETS`): `preset="dre_auc"` fixes the explainer, substrate,
metrics, their parameters and the explained class to reproduce a published protocol (here DRE's
insertion AUC) and writes `evaluation-dre_auc.json` (`name` defaults to the preset's).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import __version__, io
from .evaluation_presets import EvalSettings, build_metrics, json_metric_params, resolve_settings
from .training.rundir import RunDir

log = logging.getLogger(__name__)

FORMAT = "align-evaluation"
VERSION = 1
EVALUATION_FILE = "evaluation.json"
PARTIAL_FILE = "evaluation.partial.json"
#: Seed of the per-split sample order (see the module docstring).
ORDER_SEED = 0
#: Evaluation-config keys that may differ between a partial evaluation and its resumption.
RESUMABLE_KEYS = {"device"}
#: Values of config keys that older evaluation files do not have (they were made with these).
CONFIG_DEFAULTS = {"explain_class": "prediction", "metric_params": {}, "preset": None}

#: progress(split_key, batches_done, batches_total), called after every batch (totals over all
#: splits; a resumed split counts as done at once).
ProgressFn = Callable[[str, int, int], None]


def evaluation_files(name: str | None = None) -> tuple[str, str]:
    """(final, partial) file names of an evaluation: `evaluation.json` or `evaluation-<name>.json`."""
    if name is None:
        return EVALUATION_FILE, PARTIAL_FILE
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"evaluation name must be letters, digits, '-' or '_'; got {name!r}")
    return f"evaluation-{name}.json", f"evaluation-{name}.partial.json"


def eval_splits(protocol: dict) -> list[tuple[str, str]]:
    """[(split key, role)] evaluated for a run's protocol.json (see the module docstring)."""
    test_role = "in_domain" if protocol["name"] == "in_distribution" else "ood"
    out = [(k, test_role) for k in protocol["test_keys"]]
    if protocol["name"] != "in_distribution":
        out += [(k, "in_domain") for k in protocol["val_keys"]]
    return out


def _split_key(key: str) -> tuple[str, str]:
    domain, split = key.rsplit("_", 1)
    return domain, split


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "best",
    explainer: str = "gradcam",
    substrate: str = "blur",
    metrics: Sequence[str] | None = None,
    max_batches: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    data: str | Path | None = None,
    masks: str | Path | None = None,
    overwrite: bool = False,
    name: str | None = None,
    explain_class: str = "prediction",
    metric_params: dict[str, dict[str, Any]] | None = None,
    preset: str | None = None,
) -> dict:
    """Evaluate `run_dir`'s `checkpoint` on its test splits; write and return evaluation.json.

    Args:
        run_dir: a run directory (see `align.training.rundir`).
        checkpoint: "best" (chosen by the run's `selection`) or "last".
        explainer: a name in `align.metrics.EXPLAINERS` ("gradcam", "input_gradient",
            "integrated_gradients").
        substrate: what removed pixels become in the faithfulness metrics ("blur", "mean", "zero").
        metrics: names in `METRICS`; None = all (localisation ones only when the run has masks).
        max_batches: at most this many batches per split (None: the whole split).
        batch_size: images per batch (every metric runs on the whole batch at once).
        device: "cpu", "cuda", ...
        progress: see `ProgressFn`.
        data, masks: image / mask roots when they moved since training (default: config.json's,
            else dataset.json's resolved paths).
        overwrite: recompute even if evaluation.json exists with the same config.
        name: write `evaluation-<name>.json` instead of `evaluation.json` (e.g. scores against
            another mask root, kept beside the main evaluation); default: the preset's name.
        explain_class: "prediction" (default) or "label": the class the explainer explains.
            The faithfulness metrics track the prediction either way.
        metric_params: {metric: {keyword: value}} passed to the metrics' constructors, e.g.
            {"insertion": {"n_steps": 28}}; each name must be among the metrics evaluated.
        preset: a name in `align.evaluation_presets.PRESETS` (e.g. "dre_auc"): fixes explainer,
            substrate, metrics, metric_params and explain_class, which must then be left out.
    Returns:
        The evaluation record: {"format", "version", "config", "run", "splits": {key: {...}}}.
    """
    from .api import load_run
    from .metrics import EXPLAINERS, METRICS, SUBSTRATES

    rd = RunDir(run_dir)
    settings = resolve_settings(preset, EvalSettings(
        explainer=explainer, substrate=substrate, metrics=metrics, explain_class=explain_class,
        metric_params=metric_params))
    explainer, substrate, metrics = settings.explainer, settings.substrate, settings.metrics
    final_name, partial_name = evaluation_files(preset if name is None else name)
    EXPLAINERS.get(explainer)  # a KeyError that names the choices, before any work
    SUBSTRATES.get(substrate)
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg, protocol = rd.read_json("config.json"), rd.read_json("protocol.json")
    run = load_run(rd.path, checkpoint=checkpoint, device=device)
    folder = rebuild_folder(rd, cfg, data, masks)
    names = _metric_names(metrics, METRICS, has_masks=folder.masks_root is not None)
    params = json_metric_params(settings.metric_params)
    build_metrics(names, substrate, params)  # bad parameters fail here, before any work
    config = {
        "checkpoint": checkpoint, "step": run.step, "explainer": explainer,
        "substrate": substrate, "metrics": names, "max_batches": max_batches,
        "batch_size": batch_size, "order_seed": ORDER_SEED, "device": device,
        "masks": None if folder.masks_root is None else str(Path(folder.masks_root).resolve()),
        "explain_class": settings.explain_class, "metric_params": params, "preset": preset,
    }
    final, partial = rd / final_name, rd / partial_name
    if final.is_file() and not overwrite:
        old = _read_json(final)
        # A file of another format version is recomputed, never read as if it were current.
        if _current(old) and _same_config(old.get("config", {}), config):
            return old
    done = {} if overwrite else _resume(partial, config)
    record = {
        "format": FORMAT, "version": VERSION, "align_version": __version__,
        "config": config,
        "run": {"algorithm": cfg["algorithm"], "protocol": protocol["name"],
                "seed": cfg["seed"], "classes": run.classes},
        "skipped_metrics": [n for n in (metrics or METRICS.names()) if n not in names],
        "splits": done,
    }
    _evaluate_splits(rd, run, folder, cfg, protocol, record, names, progress, partial)
    io.write_json(final, record)
    partial.unlink(missing_ok=True)
    return record


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}); delete it to re-evaluate") from None


def _same_config(old: dict, new: dict) -> bool:
    keys = (set(old) | set(new)) - RESUMABLE_KEYS
    return all(old.get(k, CONFIG_DEFAULTS.get(k)) == new.get(k, CONFIG_DEFAULTS.get(k))
               for k in keys)


def _current(record: dict) -> bool:
    """Whether an evaluation record was written in this format and version."""
    return record.get("format") == FORMAT and record.get("version") == VERSION


def _resume(partial: Path, config: dict) -> dict:
    """Finished splits of a partial evaluation with the same config and version, else {}.

    The partial file is this module's own scratch record: one that cannot be read (cut short by
    a kill or a full disk) is started over, not an error."""
    if not partial.is_file():
        return {}
    try:
        old = _read_json(partial)
    except ValueError as e:
        log.warning("%s; starting the evaluation over", e)
        return {}
    if not _current(old) or not _same_config(old.get("config", {}), config):
        return {}  # another version, checkpoint, explainer, ...: nothing in it is reusable
    return dict(old.get("splits", {}))


def _metric_names(metrics: Sequence[str] | None, registry, has_masks: bool) -> list[str]:
    if metrics is None:
        return [n for n in registry.names() if has_masks or not registry.get(n).needs_gt_mask]
    names = list(dict.fromkeys(metrics))
    for n in names:
        if registry.get(n).needs_gt_mask and not has_masks:  # get: KeyError naming the choices
            raise ValueError(f"metric {n!r} needs ground-truth masks but the run has none")
    return names


def rebuild_folder(rd: RunDir, cfg: dict, data, masks):
    """The run's DomainFolder: same roots, domains and (skipped) images as in training.

    Images are not decoded here (fast); images that training skipped as unreadable (recorded in
    dataset.json) are left out so that splits.json matches the folder again.
    """
    from .data.folder import scan_domainbed

    recorded = rd.read_json("dataset.json")
    root = _existing(data, cfg["data"], recorded["root"], what="image root", rd=rd)
    mask_root = None
    if masks is not None or cfg.get("masks") is not None:
        mask_root = _existing(masks, cfg.get("masks"), recorded.get("masks_root"),
                              what="mask root", rd=rd)
    folder = scan_domainbed(root, masks_root=mask_root, preset=cfg.get("dataset"),
                            domains=cfg.get("domains"), verify_images=False)
    skipped = set(recorded.get("skipped", []))
    if skipped:
        folder = dataclasses.replace(
            folder, samples=[s for s in folder.samples if s.path not in skipped],
            skipped=sorted(skipped))
    return folder


def _existing(override, configured, recorded, *, what: str, rd: RunDir) -> Path:
    candidates = [override] if override is not None else [configured, recorded]
    for c in candidates:
        if c is not None and Path(c).is_dir():
            return Path(c)
    tried = ", ".join(str(c) for c in candidates if c is not None)
    raise FileNotFoundError(
        f"{rd.path}: the {what} of this run is not found (tried {tried}); pass its new location "
        "(--data / --masks)"
    )


def _split_order(indices: list[int]) -> list[int]:
    perm = np.random.RandomState(ORDER_SEED).permutation(len(indices))
    return [indices[i] for i in perm]


def _evaluate_splits(rd, run, folder, cfg, protocol, record, names, progress, partial) -> None:
    from .data.dataset import ImageDataset
    from .data.loaders import make_eval_loader
    from .data.splits import splits_from_record
    from .data.transforms import build_transform

    config = record["config"]
    splits = splits_from_record(folder, rd.read_json("splits.json"), source=str(rd / "splits.json"))
    dataset = ImageDataset(folder, build_transform(cfg["image_size"], train=False),
                           with_masks=folder.masks_root is not None)
    bs, cap = config["batch_size"], config["max_batches"]
    plan = []
    for key, role in eval_splits(protocol):
        domain, split = _split_key(key)
        indices = _split_order(splits[domain][split])
        n_batches = math.ceil(len(indices) / bs)
        plan.append((key, role, indices, n_batches if cap is None else min(cap, n_batches)))
    total = sum(p[3] for p in plan)
    metrics = build_metrics(names, config["substrate"], config["metric_params"])
    done_batches = 0
    for key, role, indices, n_batches in plan:
        if key in record["splits"]:  # finished before an interruption
            done_batches += n_batches
            if progress:
                progress(key, done_batches, total)
            continue
        loader = make_eval_loader(dataset, indices[: n_batches * bs], bs, num_workers=0)
        t0 = time.time()
        acc = _SplitAccumulator()
        for raw in loader:
            acc.add(*_score_batch(run, raw, config, metrics))
            done_batches += 1
            if progress:
                progress(key, done_batches, total)
        domain, split = _split_key(key)
        record["splits"][key] = {
            "domain": domain, "split": split, "role": role, "n_total": len(indices),
            **acc.result(names), "seconds": round(time.time() - t0, 3),
        }
        io.write_json(partial, record)


def _score_batch(run, raw: dict, config: dict, metrics: dict):
    """Correct predictions [B], {metric: MetricResult}, {eval term: values [B]} for one batch."""
    from .metrics import explain

    dev = next(run.algorithm.parameters()).device
    model = run.algorithm.classifier
    x = raw["x"].to(dev)
    mask = raw.get("mask")
    mask = None if mask is None else mask.to(dev)
    with torch.no_grad():
        pred = run.algorithm.predict(x).argmax(1)
    explained = pred if config["explain_class"] == "prediction" else raw["y"].to(dev)
    saliency = explain(config["explainer"], model, x, target=explained)
    results = {}
    for name, metric in metrics.items():
        # The tracked class is the prediction whatever is explained (DRE tracks the argmax too).
        results[name] = metric(model=model, x=x, saliency=saliency, target=pred, gt_mask=mask)
    with torch.no_grad():
        extra = run.algorithm.eval_terms(x, mask)
    return (pred.cpu() == raw["y"]), results, extra


class _SplitAccumulator:
    """Pools per-sample values over the batches of one split."""

    def __init__(self) -> None:
        self.correct: list[torch.Tensor] = []
        self.values: dict[str, list[torch.Tensor]] = {}
        self.curves: dict[str, list[torch.Tensor]] = {}
        self.fractions: dict[str, list[float]] = {}
        self.extra: dict[str, list[torch.Tensor]] = {}

    def add(self, correct, results, extra) -> None:
        self.correct.append(correct)
        for name, r in results.items():
            self.values.setdefault(name, []).append(r.values.detach().double().cpu())
            if r.curves is not None:
                self.curves.setdefault(name, []).append(r.curves.detach().double().cpu())
                self.fractions[name] = list(r.fractions)
        for name, v in extra.items():
            self.extra.setdefault(name, []).append(v.detach().double().cpu())

    def result(self, names: list[str]) -> dict[str, Any]:
        from .metrics import METRICS, aggregate

        correct = torch.cat(self.correct)
        out: dict[str, Any] = {"n": int(correct.numel()), "accuracy": float(correct.double().mean())}
        out["metrics"] = {}
        for name in names:
            a = aggregate(self.values[name])
            meta = METRICS.get(name)
            out["metrics"][name] = {"mean": _num(a.mean), "n_valid": a.n_valid,
                                    "n_excluded": a.n_excluded, "direction": meta.direction,
                                    "category": meta.category}
        out["curves"] = {}
        for name, parts in self.curves.items():
            c = torch.cat(parts)
            ok = ~torch.isnan(c).any(dim=1)
            out["curves"][name] = {"fractions": self.fractions[name],
                                   "mean": [float(v) for v in c[ok].mean(dim=0)]}
        out["extras"] = {}
        for name, parts in self.extra.items():
            a = aggregate(parts)
            out["extras"][name] = {"mean": _num(a.mean), "n_valid": a.n_valid,
                                   "n_excluded": a.n_excluded}
        return out


def _num(v: float) -> float | None:
    """JSON has no NaN: an undefined mean (no valid sample) is null."""
    return None if math.isnan(v) else v
