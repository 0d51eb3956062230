"""`align benchmark` over the four regimes: {square, background} cue x {scratch, pretrained}.

    run_regimes(Path("benchmark"), ["square-scratch", ...], ["erm", "dre", "align", "gradia"],
                seeds=[0, 1, 2])

Each regime is a whole synthetic benchmark of its own in `OUT/<regime>/` (data, runs,
results.md: per held-out domain), trained by `sweep.run_synthetic_benchmark`; the pretrained
regimes share one upstream-pretrained weights file in `OUT/pretrained/`. The combined table,
`OUT/regimes.md` (and `.json`), is a pure function of the run directories:

- OOD accuracy: the held-out domains averaged per seed, then mean +- sample std over seeds
  (`report.stats.mean_std`: no std for one seed);
- paired vs ERM and vs DRE: the mean difference over (held-out domain, seed) pairs, its standard
  error and how many pairs favour the row (`mask_quality.paired_difference`); ALIGN is DRE plus
  the masker's guidance, so "vs DRE" is what the guidance adds;
- in-domain: the training domains' validation accuracy;
- selected steps (range over runs) and the warm-up end (ALIGN: guidance start);
- ALIGN's masker on the held-out domain at the selected checkpoint: mean mask value inside the
  object (keeps object), inside the cue (keeps cue) and over the whole image (area).

`OUT/figures/regimes-masker.png` (and `.pdf`) draws the same three over training, one panel per
regime, mean and range over ALIGN's runs: whether the masker converged, and onto what.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from rich.console import Console

from .. import io
from ..report.stats import MeanStd, format_mean_std, mean_std
from ..report.writers import markdown_table
from ..rundir import RunFiles, selection_of
from ..sweep import run_synthetic_benchmark
from .mask_quality import paired_cell, paired_difference


def run_regimes(out: Path, regimes: list[str], algorithms: list[str], seeds: list[int], *,
                steps: int | None = None, test_domains: list[str] | None = None,
                console: Console | None = None,
                shard: tuple[int, int] | None = None) -> dict | None:
    """Train every regime's grid (resumable), then write OUT/regimes.md and .json (not with
    `shard`: other shards may still be running)."""
    console = console or Console()
    out = Path(out)
    for regime in regimes:
        console.rule(f"regime {regime}")
        run_synthetic_benchmark(out / regime, algorithms, seeds, steps=steps,
                                test_domains=test_domains, console=console, shard=shard,
                                regime=regime, pretrained_dir=out / "pretrained")
    if shard is not None:
        return None
    table = collect(out, regimes, algorithms)
    text = markdown(table)
    io.write_json(out / "regimes.json", table)
    io.write_text(out / "regimes.md", text)
    masker_figure(out, regimes)
    console.print(text)
    return table


def _run_dirs(root: Path, algorithm: str) -> list[Path]:
    return sorted(p.parent for p in (root / "runs" / algorithm).glob("test-*/seed*/summary.json"))


def collect(out: Path, regimes: list[str], algorithms: list[str]) -> dict:
    """{regime: {algorithm: row}} from the finished runs under OUT/<regime>/runs/<algorithm>/."""
    table: dict = {}
    for regime in regimes:
        rows: dict = {}
        for algorithm in algorithms:
            per_run: dict[str, float] = {}
            by_seed: dict[int, list[float]] = {}
            ind, steps, starts, scores = [], [], set(), {"object": [], "cue": [], "area": []}
            for run in _run_dirs(out / regime, algorithm):
                files = RunFiles(run)
                summary = files.summary()
                sel = summary[selection_of(files.config())]
                dom, seed = run.parent.name.removeprefix("test-"), int(run.name.removeprefix("seed"))
                per_run[f"{dom}/{seed}"] = sel["test_acc"]
                by_seed.setdefault(seed, []).append(sel["test_acc"])
                ind.append(sel["val_acc"])
                steps.append(sel["step"])
                starts.add(summary.get("objective_start", 0))
                ev = sel.get("eval", {})
                for name, key in (("object", "masker_coverage"), ("cue", "masker_coverage@cue"),
                                  ("area", "masker_area")):
                    value = ev.get(key, {}).get(f"{dom}_in")
                    if value is not None:
                        scores[name].append(value)
            if not per_run:
                continue
            # Only seeds with every held-out domain enter the per-seed average.
            n_dom = max(len(v) for v in by_seed.values())
            seed_avgs = [statistics.fmean(v) for v in by_seed.values() if len(v) == n_dom]
            ood = mean_std(seed_avgs)
            rows[algorithm] = {
                "ood": (ood.mean, ood.std), "n_seeds": ood.n, "n_runs": len(per_run),
                "in_domain": statistics.fmean(ind), "per_run": per_run,
                "steps": [min(steps), max(steps)], "objective_start": sorted(starts),
                "masker": {k: statistics.fmean(v) for k, v in scores.items() if v},
            }
        # ALIGN is DRE plus guidance, so "vs DRE" isolates what the guidance adds.
        for ref in ("erm", "dre"):
            if ref in rows:
                for row in rows.values():
                    row[f"paired_vs_{ref}"] = paired_difference(row["per_run"],
                                                                rows[ref]["per_run"])
        table[regime] = rows
    return table


def _paired(row: dict, ref: str, algorithm: str) -> str:
    return "-" if algorithm == ref else paired_cell(row.get(f"paired_vs_{ref}"))


def markdown(table: dict) -> str:
    head = ["regime", "algorithm", "OOD % (avg over held-out domains; mean ± std over seeds)",
            "paired vs ERM (points)", "paired vs DRE (points)", "in-domain %", "selected steps",
            "warm-up until", "masker keeps object", "masker keeps cue", "masker area"]
    rows = []
    for regime, algorithms in table.items():
        for algorithm, r in algorithms.items():
            m = r["masker"]
            cov = [f"{m[k]:.2f}" if k in m else "-" for k in ("object", "cue", "area")]
            start = "/".join(str(s) for s in r["objective_start"] if s) or "-"
            ood = format_mean_std(MeanStd(*r["ood"], r["n_seeds"]), 100)
            rows.append([regime, algorithm, f"{ood} (n={r['n_seeds']})",
                         _paired(r, "erm", algorithm), _paired(r, "dre", algorithm),
                         f"{100 * r['in_domain']:.1f}", f"{r['steps'][0]}-{r['steps'][1]}", start,
                         *cov])
    return markdown_table(head, rows) + "\n"


#: (label, eval key) of the masker's scores drawn over training.
MASKER_CURVES = (("keeps object", "masker_coverage"), ("keeps cue", "masker_coverage@cue"),
                 ("area", "masker_area"))


def masker_curves(root: Path, algorithm: str = "align") -> dict[str, tuple[list, list]]:
    """{label: (steps, [values of each run])} of the masker on each run's held-out domain, read
    from results.jsonl (ALIGN logs it at every evaluation; runs without it are left out)."""
    curves: dict = {}
    for run in _run_dirs(root, algorithm):
        dom = run.parent.name.removeprefix("test-")
        records = RunFiles(run).records()
        for label, key in MASKER_CURVES:
            values = [r.get("eval", {}).get(key, {}).get(f"{dom}_in") for r in records]
            if all(v is not None for v in values) and values:
                steps, runs = curves.setdefault(label, ([r["step"] for r in records], []))
                if len(values) == len(steps):
                    runs.append(values)
    return curves


def masker_figure(out: Path, regimes: list[str]) -> Path | None:
    """One panel per regime: ALIGN's masker over training (mean line, min-max band over runs),
    with guidance start dashed. None when no run logged the masker."""
    from ..report.figures import new_figure, save

    panels = [(r, masker_curves(out / r)) for r in regimes]
    panels = [(r, c) for r, c in panels if c]
    if not panels:
        return None
    fig = new_figure(3.2 * len(panels), 2.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (regime, curves) in zip(axes, panels):
        for i, (label, (steps, runs)) in enumerate(curves.items()):
            lo = [min(v) for v in zip(*runs)]
            hi = [max(v) for v in zip(*runs)]
            mean = [statistics.fmean(v) for v in zip(*runs)]
            ax.plot(steps, mean, marker=".", color=f"C{i}", label=f"{label} ({len(runs)} runs)")
            ax.fill_between(steps, lo, hi, color=f"C{i}", alpha=0.15)
        starts = {RunFiles(p).summary().get("objective_start", 0)
                  for p in _run_dirs(out / regime, "align")}
        for start in sorted(starts - {0}):
            ax.axvline(start, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(regime, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean mask value", fontsize=8)
    axes[0].legend(fontsize=6)
    caption = ("ALIGN's masker over training on the held-out domain: mean mask value inside the "
               "object, inside the cue and over the whole image (mean over runs, band: min-max); "
               "dashed: guidance starts.")
    return out / save(fig, out, "regimes-masker", caption).png
