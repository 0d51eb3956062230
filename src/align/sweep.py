"""`align benchmark`: the synthetic benchmark's leave-one-domain-out grid, a preset of `align sweep`.

Every (algorithm, held-out domain, seed) of one regime (`align.regimes`) with the quickstart's
settings (`align.experiments.settings`), built by the sweep's grid (`experiments.sweep_grid`,
one hyperparameter draw: the defaults) and trained by its local launcher, so runs are resumed or
skipped when already done and the regime's folder gets a `sweep.json` manifest. Runs keep the
benchmark's own names, `runs/<label>/test-<domain>/seed<k>`: `<label>` is the algorithm's name,
followed by the hyperparameters set on the command line (`--set sparsity_weight=1.0` gives
`align-sparsity_weight=1.0`), so variants sit beside the defaults and never overwrite them.

On a cluster, `--shard I/N` runs only the runs whose position in the (fixed) grid is I modulo N:
N array jobs with I = 0..N-1 cover the grid once between them, each resumable on its own (and
`align sweep --synthetic REGIME --launcher slurm` submits the same grid as one job array). A
final call without `--shard` finds every run done and writes the table. The aggregate table is
a pure function of the run directories.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Callable

from rich.console import Console

from . import io
from .config import TrainConfig
from .experiments.settings import (QUICKSTART_SETTINGS, cue_scores, quickstart_hparams,
                                   synthetic_source)
from .experiments.sweep_grid import Point, SweepSpec, expand, parse_assignments, scope_hparams
from .report.stats import format_mean_std, mean_std
from .report.writers import markdown_table as write_markdown
from .rundir import RunFiles


def run_name(algorithm: str, test_domain: str, seed: int, label: str | None = None) -> str:
    return f"{label or algorithm}/test-{test_domain}/seed{seed}"


def variant_label(algorithm: str, overrides: dict) -> str:
    """`align` for the defaults, `align-sparsity_weight=1.0` for a variant (keys sorted)."""
    parts = [f"{k}={v}" for k, v in sorted(overrides.items())]
    label = "-".join([algorithm, *parts])
    if not re.fullmatch(r"[A-Za-z0-9_.=+-]+", label):
        raise ValueError(f"hyperparameter values must be plain numbers or words; got {overrides}")
    return label


def parse_overrides(items: list[str], algorithms: list[str]) -> dict:
    """`["sparsity_weight=1.0"]` -> {"sparsity_weight": 1.0}, values read as YAML scalars; every
    key must be a hyperparameter of every algorithm of the sweep (`lr`, `weight_decay` and
    `dropout` are everyone's), and every value valid for it."""
    out = parse_assignments(items)
    scope_hparams(out, algorithms)
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """"I/N" -> (I, N) with 0 <= I < N; None stays None."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ValueError(f"--shard expects I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(match[1]), int(match[2])


def benchmark_spec(data: Path, algorithms: list[str], seeds: list[int],
                   steps: int | None = None, test_domains: list[str] | None = None,
                   overrides: dict | None = None, source: dict | None = None) -> SweepSpec:
    """The benchmark's grid over the synthetic benchmark in `data`: the quickstart's settings
    updated by `source` (`settings.synthetic_source`: data, masks, cues, a regime's weights);
    every run also scores ALIGN's masker against the cue masks at each evaluation."""
    domains = sorted(p.name for p in (data / "images").iterdir() if p.is_dir())
    cues = cue_scores(data)
    settings = {**QUICKSTART_SETTINGS, **({"steps": steps} if steps else {}),
                "data": str(data / "images"), "masks": str(data / "masks"), **cues,
                **(source or {})}
    return SweepSpec(
        algorithms=tuple(algorithms), domains=tuple(domains), settings=settings,
        seeds=tuple(seeds), test_domains=tuple(test_domains or ()),
        base={a: quickstart_hparams(a, settings["steps"]) for a in algorithms},
        fixed=scope_hparams(overrides or {}, algorithms))


def benchmark_naming(spec: SweepSpec) -> Callable[[Point], str]:
    """`runs/<label>/test-<domain>/seed<k>` (see `variant_label`)."""
    def name(p: Point) -> str:
        label = variant_label(p.algorithm, dict(spec.fixed.get(p.algorithm, {})))
        return "runs/" + run_name(p.algorithm, p.domains[0], p.seed, label)
    return name


def synthetic_configs(out: Path, data: Path, algorithms: list[str], seeds: list[int],
                      steps: int | None = None, test_domains: list[str] | None = None,
                      overrides: dict | None = None,
                      regime_settings: dict | None = None) -> list[TrainConfig]:
    """Every (algorithm, held-out domain, seed) run of the grid, with the quickstart's settings
    updated by `regime_settings` (e.g. the pretrained weights of `align.regimes`). Every run also
    scores ALIGN's masker against the cue masks at each evaluation (`eval_masks`)."""
    spec = benchmark_spec(data, algorithms, seeds, steps, test_domains, overrides,
                          regime_settings)
    return [r.config for r in expand(spec, Path(out), benchmark_naming(spec))]


def aggregate(run_dirs: list[Path], method: str = "training_domain_validation",
              labels: list[str] | None = None) -> dict:
    """{label: {domain: {"ood": (mean, std, n), "in": (...)}, "avg": ...}} over seeds
    (`report.stats.mean_std`: std None for one seed).

    "ood" is the held-out domain's test accuracy; "in" the mean validation accuracy of the
    training domains; "masker_iou" the masker's IoU on the held-out domain when logged. A run's
    label is its algorithm unless `labels` (one per run) says otherwise.
    """
    acc: dict = {}
    for i, rd in enumerate(run_dirs):
        run = RunFiles(rd)
        summary, proto = run.summary(), run.protocol()
        algo = labels[i] if labels else run.config()["algorithm"]
        sel = summary[method]
        dom = proto["test_domains"][0]
        cell = acc.setdefault(algo, {}).setdefault(
            dom, {"ood": [], "in": [], "masker_iou": [], "step": [], "objective_start": []})
        cell["ood"].append(sel["test_acc"])
        cell["in"].append(sel["val_acc"])
        cell["step"].append(sel["step"])
        cell["objective_start"].append(summary.get("objective_start", 0))
        iou = sel.get("eval", {}).get("masker_iou", {}).get(f"{dom}_in")
        if iou is not None:
            cell["masker_iou"].append(iou)
    out: dict = {}
    for algo, doms in acc.items():
        # Steps are summarised by their range (min, max, n): a mean step names no checkpoint.
        out[algo] = {d: {k: ((min(v), max(v), len(v)) if k in ("step", "objective_start")
                             else mean_std(v) if v else (None, None, 0)) for k, v in c.items()}
                     for d, c in doms.items()}
        # The average over domains is taken per seed first, then mean +- std over seeds.
        per_seed = [statistics.fmean(vals) for vals in zip(*(c["ood"] for c in doms.values()))]
        out[algo]["avg"] = {"ood": mean_std(per_seed)}
    return out


def markdown_table(agg: dict) -> str:
    """Rows: algorithms; columns: held-out domains and their average (OOD accuracy, %)."""
    domains = sorted({d for a in agg.values() for d in a if d != "avg"})
    head = ["algorithm", *domains, "avg", "in-domain (val)", "masker IoU (held-out)",
            "selected steps", "warm-up until"]
    rows = []
    for algo, cells in agg.items():
        row = [format_mean_std(cells[d]["ood"], 100) if d in cells else "-" for d in domains]
        ind = statistics.fmean(cells[d]["in"][0] for d in domains if d in cells)
        ious = [cells[d]["masker_iou"][0] for d in domains if d in cells and cells[d]["masker_iou"][2]]
        iou = f"{statistics.fmean(ious):.3f}" if ious else "-"
        # min-max of the selected checkpoints' steps over runs; the warm-up end (objective_start)
        # is the same for every run of a row.
        steps = [cells[d]["step"][k] for d in domains if d in cells and "step" in cells[d]
                 for k in (0, 1)]
        starts = {cells[d]["objective_start"][k] for d in domains
                  if d in cells and "objective_start" in cells[d] for k in (0, 1)}
        start = "-" if starts <= {0} else "/".join(f"{v:g}" for v in sorted(starts))
        rows.append([algo, *row, format_mean_std(cells["avg"]["ood"], 100), f"{100 * ind:.1f}", iou,
                     f"{min(steps):g}-{max(steps):g}" if steps else "-", start])
    return write_markdown(head, rows) + "\n"


def run_synthetic_benchmark(out: Path, algorithms: list[str], seeds: list[int],
                            steps: int | None = None, test_domains: list[str] | None = None,
                            console: Console | None = None, overrides: dict | None = None,
                            shard: tuple[int, int] | None = None,
                            regime: str = "square-scratch",
                            pretrained_dir: Path | None = None) -> dict | None:
    """Train (or resume) every run of the grid of one regime (`align.regimes`) in `out`, then
    write results.md / results.json (`results-<KEY=VALUE...>.md/.json` for a variant, so it
    never replaces the defaults' table). A pretrained regime's weights are made once in
    `pretrained_dir` (default `out/pretrained`).

    With `shard=(i, n)` only every n-th run from the i-th is trained and nothing is aggregated
    (returns None): the other shards may still be running.
    """
    from .experiments.sweep_run import launch_runs, write_manifest

    console = console or Console()
    out = Path(out)
    source = synthetic_source(out, regime, console, QUICKSTART_SETTINGS["backbone"],
                              QUICKSTART_SETTINGS["image_size"], pretrained_dir)
    spec = benchmark_spec(out / "data", algorithms, seeds, steps, test_domains, overrides, source)
    runs = expand(spec, out, benchmark_naming(spec))
    write_manifest(out, spec, runs)
    mine = [r for i, r in enumerate(runs) if shard is None or i % shard[1] == shard[0]]
    launch_runs(mine, out, "local", console=console)
    if shard is not None:
        console.print(f"shard {shard[0]}/{shard[1]}: {len(mine)} of {len(runs)} runs done; "
                      "run again without --shard to write the table")
        return None
    labels = [variant_label(r.point.algorithm, dict(spec.fixed[r.point.algorithm])) for r in runs]
    agg = aggregate([Path(r.config.out) for r in runs], labels=labels)
    table = markdown_table(agg)
    stem = "results" + "".join(f"-{k}={v}" for k, v in sorted((overrides or {}).items()))
    io.write_text(out / f"{stem}.md", table)
    io.write_json(out / f"{stem}.json", agg)
    console.print(table)
    return agg
