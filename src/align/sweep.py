"""Sweeps: every (algorithm, held-out domain, seed) of a leave-one-domain-out comparison.

`align benchmark` runs the synthetic benchmark with the quickstart's settings; runs are named
`<algorithm>/test-<domain>/seed<k>` and resumed or skipped when already done, so a sweep that was
interrupted (or split over a cluster's jobs with `--only`) continues where it stopped. The
aggregate table is a pure function of the run directories.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from rich.console import Console

from . import io
from .config import TrainConfig
from .quickstart import QUICKSTART_SETTINGS, ensure_data, quickstart_hparams


def run_name(algorithm: str, test_domain: str, seed: int) -> str:
    return f"{algorithm}/test-{test_domain}/seed{seed}"


def synthetic_configs(out: Path, data: Path, algorithms: list[str], seeds: list[int],
                      steps: int | None = None, test_domains: list[str] | None = None) -> list[TrainConfig]:
    domains = sorted(p.name for p in (data / "images").iterdir() if p.is_dir())
    unknown = sorted(set(test_domains or []) - set(domains))
    if unknown:
        raise ValueError(f"unknown test domain(s) {', '.join(unknown)}; the benchmark has {', '.join(domains)}")
    domains = [d for d in domains if not test_domains or d in test_domains]
    settings = {**QUICKSTART_SETTINGS, **({"steps": steps} if steps else {})}
    return [
        TrainConfig(
            data=str(data / "images"), masks=str(data / "masks"),
            out=str(out / "runs" / run_name(a, d, s)), algorithm=a, protocol="lodo",
            test_domains=[d], seed=s, hparams=quickstart_hparams(a, settings["steps"]), **settings,
        )
        for a in algorithms for d in domains for s in seeds
    ]


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(run_dirs: list[Path], method: str = "training_domain_validation") -> dict:
    """{algorithm: {domain: {"ood": (mean, std, n), "in": (...)}, "avg": ...}} over seeds.

    "ood" is the held-out domain's test accuracy; "in" the mean validation accuracy of the
    training domains; "masker_iou" the masker's IoU on the held-out domain when logged.
    """
    acc: dict = {}
    for rd in run_dirs:
        summary = json.loads((rd / "summary.json").read_text())
        proto = json.loads((rd / "protocol.json").read_text())
        algo = json.loads((rd / "config.json").read_text())["algorithm"]
        sel = summary[method]
        dom = proto["test_domains"][0]
        cell = acc.setdefault(algo, {}).setdefault(dom, {"ood": [], "in": [], "masker_iou": []})
        cell["ood"].append(sel["test_acc"])
        cell["in"].append(sel["val_acc"])
        iou = sel.get("eval", {}).get("masker_iou", {}).get(f"{dom}_in")
        if iou is not None:
            cell["masker_iou"].append(iou)
    out: dict = {}
    for algo, doms in acc.items():
        out[algo] = {d: {k: (*_mean_std(v), len(v)) for k, v in c.items()} for d, c in doms.items()}
        # The average over domains is taken per seed first, then mean +- std over seeds.
        per_seed = [statistics.fmean(vals) for vals in zip(*(c["ood"] for c in doms.values()))]
        out[algo]["avg"] = {"ood": (*_mean_std(per_seed), len(per_seed))}
    return out


def markdown_table(agg: dict) -> str:
    """Rows: algorithms; columns: held-out domains and their average (OOD accuracy, %)."""
    domains = sorted({d for a in agg.values() for d in a if d != "avg"})
    head = "| algorithm | " + " | ".join(domains) + " | avg | in-domain (val) | masker IoU (held-out) |"
    lines = [head, "|" + "---|" * (len(domains) + 4)]
    for algo, cells in agg.items():
        row = [f"{100 * cells[d]['ood'][0]:.1f} ± {100 * cells[d]['ood'][1]:.1f}" if d in cells else "-"
               for d in domains]
        avg = cells["avg"]["ood"]
        ind = statistics.fmean(cells[d]["in"][0] for d in domains if d in cells)
        ious = [cells[d]["masker_iou"][0] for d in domains if d in cells and cells[d]["masker_iou"][2]]
        iou = f"{statistics.fmean(ious):.3f}" if ious else "-"
        lines.append(f"| {algo} | " + " | ".join(row)
                     + f" | {100 * avg[0]:.1f} ± {100 * avg[1]:.1f} | {100 * ind:.1f} | {iou} |")
    return "\n".join(lines) + "\n"


def run_synthetic_benchmark(out: Path, algorithms: list[str], seeds: list[int],
                            steps: int | None = None, test_domains: list[str] | None = None,
                            console: Console | None = None) -> dict:
    from .train.loop import Trainer
    from .ui import progress_bar

    console = console or Console()
    out = Path(out)
    data = ensure_data(out / "data", 0, console)
    configs = synthetic_configs(out, data, algorithms, seeds, steps, test_domains)
    for i, cfg in enumerate(configs, 1):
        label = f"[{i}/{len(configs)}] {Path(cfg.out).relative_to(out / 'runs')}"
        with progress_bar(cfg.steps, label, console) as prog:
            Trainer(cfg, prog).run()
    agg = aggregate([Path(c.out) for c in configs])
    table = markdown_table(agg)
    io.write_text(out / "results.md", table)
    io.write_json(out / "results.json", agg)
    console.print(table)
    return agg
