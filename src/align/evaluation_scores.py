"""Scoring the splits of an evaluation: batches, metrics, per-split pooling (see `align.evaluate`).

Sample order: each split is visited in a fixed seeded permutation (`ORDER_SEED`), so
`max_batches` takes a class-balanced-in-expectation subset (the samples are stored sorted by
class) and a smaller `max_batches` evaluates a prefix of a larger one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from . import io
from .evaluation_examples import ExampleCollector, pick_examples, write_examples
from .rundir import RunFiles, eval_splits

#: Seed of the per-split sample order (see the module docstring).
ORDER_SEED = 0

#: progress(split_key, batches_done, batches_total), called after every batch (totals over all
#: splits; a resumed split counts as done at once).
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SplitPlan:
    """One split to score: its key and role, its samples in the seeded order (dataset indices)
    and how many batches of them are scored."""

    key: str
    role: str
    indices: list[int]
    n_batches: int


def plan_splits(protocol: dict, splits: dict, batch_size: int,
                max_batches: int | None) -> list[SplitPlan]:
    """The splits `eval_splits` names, each in its seeded order, capped at `max_batches`."""
    plan = []
    for key, role in eval_splits(protocol):
        domain, split = key.rsplit("_", 1)
        indices = splits[domain][split]
        indices = [indices[i] for i in np.random.RandomState(ORDER_SEED).permutation(len(indices))]
        n_batches = math.ceil(len(indices) / batch_size)
        plan.append(SplitPlan(key, role, indices,
                              n_batches if max_batches is None else min(max_batches, n_batches)))
    return plan


def score_splits(files: RunFiles, run, folder, cfg: dict, protocol: dict, record: dict,
                 names: list[str], progress: ProgressFn | None,
                 paths: tuple[Path, Path, str]) -> None:
    """Score every split of the run not yet in `record["splits"]`, in place.

    After each split the record so far goes to the partial file, and after the first split
    (`record["examples"]`, see `align.evaluation_examples`) its examples to the partial examples
    file: `paths` is (partial json, partial examples, final examples file name).
    """
    from .data.dataset import ImageDataset
    from .data.loaders import make_eval_loader
    from .data.splits import splits_from_record
    from .data.transforms import build_transform
    from .evaluation_presets import build_metrics

    config = record["config"]
    splits = splits_from_record(folder, files.splits(), source=str(files / "splits.json"))
    dataset = ImageDataset(folder, build_transform(cfg["image_size"], train=False),
                           with_masks=folder.masks_root is not None)
    bs = config["batch_size"]
    plan = plan_splits(protocol, splits, bs, config["max_batches"])
    total = sum(p.n_batches for p in plan)
    metrics = build_metrics(names, config["substrate"], config["metric_params"] or {})
    partial, partial_examples, examples_name = paths
    done_batches = 0
    for i, p in enumerate(plan):
        with_examples = i == 0 and config["n_examples"] > 0
        if p.key in record["splits"] and (record["examples"] is not None or not with_examples):
            done_batches += p.n_batches  # finished before an interruption
            if progress:
                progress(p.key, done_batches, total)
            continue
        scored = p.indices[: p.n_batches * bs]
        collector = None
        if with_examples:
            picked = pick_examples([(j, folder.samples[j].path,
                                     folder.classes[folder.samples[j].label]) for j in scored],
                                   config["n_examples"])
            collector = ExampleCollector(p.key, picked, folder,
                                         getattr(run.algorithm, "masker", None))
        t0 = time.time()
        acc = _SplitAccumulator()
        for raw in make_eval_loader(dataset, scored, bs, num_workers=0):
            batch = _score_batch(run, raw, config, metrics)
            acc.add(batch.correct, batch.results, batch.extra)
            if collector is not None:
                collector.add(raw, batch.pred, batch.saliency)
            done_batches += 1
            if progress:
                progress(p.key, done_batches, total)
        domain, split = p.key.rsplit("_", 1)
        record["splits"][p.key] = {
            "domain": domain, "split": split, "role": p.role, "n_total": len(p.indices),
            **acc.result(names), "seconds": round(time.time() - t0, 3),
        }
        if collector is not None:
            record["examples"] = write_examples(partial_examples, examples_name, collector.result())
        io.write_json(partial, record)


class BatchScores(NamedTuple):
    correct: torch.Tensor  # bool [B]: prediction == label
    results: dict  # {metric: MetricResult}
    extra: dict  # {eval term: values [B]}
    pred: torch.Tensor  # [B] predicted classes
    saliency: torch.Tensor  # [B, 1, H, W] the scored maps


def _score_batch(run, raw: dict, config: dict, metrics: dict) -> BatchScores:
    """Predictions, explanations and every metric on one batch (see `BatchScores`)."""
    from .metrics import explain

    dev = next(run.algorithm.parameters()).device
    model = run.algorithm.classifier
    x = raw["x"].to(dev)
    mask = raw.get("mask")
    mask = None if mask is None else mask.to(dev)
    # Inference mode where no gradient is needed; `pred`, computed outside it from the logits,
    # is an ordinary tensor that the Grad-CAM below may use as its target.
    with torch.inference_mode():
        logits = run.algorithm.predict(x)
    pred = logits.argmax(1)
    explained = pred if config["explain_class"] == "prediction" else raw["y"].to(dev)
    saliency = explain(config["explainer"], model, x, target=explained)
    results = {}
    for name, metric in metrics.items():
        # The tracked class is the prediction whatever is explained (DRE tracks the argmax too).
        results[name] = metric(model=model, x=x, saliency=saliency, target=pred, gt_mask=mask)
    with torch.inference_mode():
        extra = run.algorithm.eval_terms(x, mask)
    return BatchScores(pred.cpu() == raw["y"], results, extra, pred.cpu(), saliency)


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
        out: dict[str, Any] = {"n": int(correct.numel()),
                               "accuracy": float(correct.double().mean())}
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
