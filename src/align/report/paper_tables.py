"""The report's tables, in the paper's shape, as data and as Markdown, CSV and LaTeX.

Per setting (see `collect`), rows are methods and:

- accuracy, in-distribution and out-of-distribution: columns = domains + avg. Accuracies come from
  summary.json under the run's own selection (config `selection`: training-domain validation
  unless set, e.g. `val_loss` for the dre/align presets; the checkpoint `align evaluate` scores
  by default), over all samples of each split. In-domain is the test split for `in_distribution`
  and the training domains' `out` (validation) split otherwise; out-of-distribution is each
  held-out domain's test split;
- explanation metrics, in- and out-of-distribution: columns = every metric of the runs'
  evaluation.json (plus the masker's IoU for ALIGN), each averaged over the domains of that role;
- one per-domain table (columns = domains + avg) per metric and role, when a role has more
  than one domain (otherwise the explanation-metrics table already holds the same numbers).

Aggregation: a run gives one value per (column); runs of the same seed (e.g. a leave-one-domain-out
sweep over held-out domains) are averaged per seed first; a cell is the mean ± sample standard
deviation (n - 1) over seeds, the std left out when there is one seed. `avg` is taken per seed
over the columns (only seeds that have every column), then mean ± std over seeds.

Values are shown x100 with two decimals. The best cell of each column is marked (bold in Markdown
and LaTeX, `*` in the CSV's `best` column) following the column's direction: higher is better
except for sufficiency and deletion (the metrics' declared `direction`). Cells are compared at the
shown precision, so ties are all marked; a column with fewer than two values marks nothing.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Iterable

from ..rundir import eval_splits
from .collect import Method, RunRecord, Setting
from .stats import MeanStd, format_mean_std, seed_cells
from .writers import TexRaw, csv_table, latex_table, markdown_table, tex_escape, tex_label

SCALE = 100.0
DECIMALS = 2
MISSING = "-"
#: Algorithm evaluation scores shown next to the metrics, with their direction.
EXTRA_DIRECTIONS = {"masker_iou": "higher"}
ACCURACY_NOTES = {
    "in_domain": "All samples of each split. In-distribution = a training domain's held-out "
                 "`out` split (its validation split; in_distribution protocol: its test split).",
    "ood": "All samples of each held-out domain's test split.",
}
DISPLAY = {"insertion": "insertion AUC", "deletion": "deletion AUC", "iou": "IoU",
           "masker_iou": "masker IoU"}
ROLES = (("in_domain", "in-distribution"), ("ood", "out-of-distribution"))


#: A table cell: mean, std (None with a single seed) and number of seeds (`stats.mean_std`).
Cell = MeanStd


def shown(cell: Cell) -> float:
    """The value as the tables show it (x100, rounded): what "best" compares."""
    return round(cell.mean * SCALE, DECIMALS)


@dataclass
class Table:
    """rows: (method label, number of seeds, one Cell or None per column)."""

    key: str
    title: str
    columns: list[str]
    directions: list[str | None]
    rows: list[tuple[str, int, list[Cell | None]]]
    note: str = ""

    def best(self) -> list[set[int]]:
        """Per column, the indices of the rows holding the best shown value."""
        out = []
        for j, direction in enumerate(self.directions):
            vals = {i: shown(r[2][j]) for i, r in enumerate(self.rows) if r[2][j] is not None}
            if direction is None or len(vals) < 2:
                out.append(set())
                continue
            target = (max if direction == "higher" else min)(vals.values())
            out.append({i for i, v in vals.items() if v == target})
        return out


def display_name(name: str) -> str:
    return DISPLAY.get(name, name.replace("_", " "))


# ------------------------------------------------------------------ aggregation
PerRun = Callable[[RunRecord], Iterable[tuple[str, float]]]


def _cells(method: Method, columns: list[str], per_run: PerRun, avg: bool
           ) -> tuple[int, list[Cell | None]]:
    """One cell per column (and avg) for a method: per-seed means, then mean ± std over seeds;
    and the number of seeds with a value (a run of a folder may not be evaluated)."""
    seeds: dict[int, dict[str, list[float]]] = {}
    for run in method.runs:
        for col, value in per_run(run):
            if value is not None:
                seeds.setdefault(run.seed, {}).setdefault(col, []).append(value)
    per_seed = {s: {c: statistics.fmean(v) for c, v in cols.items()} for s, cols in seeds.items()}
    return len(per_seed), seed_cells(per_seed, columns, avg)


def _columns(setting: Setting, per_run: PerRun, order: list[str]) -> list[str]:
    found = {c for m in setting.methods for r in m.runs for c, v in per_run(r) if v is not None}
    return [c for c in order if c in found]


def _table(setting: Setting, key: str, title: str, per_run: PerRun, order: list[str],
           directions: Callable[[str], str | None], avg: bool, note: str = "",
           names: Callable[[str], str] = display_name) -> Table | None:
    """`names`: each column's title (metric names get their display names; domain columns
    pass `str`, a domain being shown, and written to the CSV, as its folder is named)."""
    columns = _columns(setting, per_run, order)
    if not columns:
        return None
    rows = [(m.label, *_cells(m, columns, per_run, avg)) for m in setting.methods]
    dirs = [directions(c) for c in columns]
    titles = [names(c) for c in columns]
    if avg:
        titles.append("avg")
        dirs.append(dirs[0] if len(set(dirs)) == 1 else None)
    return Table(key, title, titles, dirs, rows, note)


# ------------------------------------------------------------------ per-run extractors
def _accuracy(role: str) -> PerRun:
    def per_run(run: RunRecord):
        acc = run.selected["acc"]
        for k, r in eval_splits(run.protocol):
            if r == role and k in acc:
                yield k.rsplit("_", 1)[0], acc[k]
    return per_run


def _eval_splits(run: RunRecord, role: str):
    for split in (run.evaluation or {"splits": {}})["splits"].values():
        if split["role"] == role:
            yield split


def _scores(split: dict) -> dict[str, float | None]:
    out = {m: v["mean"] for m, v in split["metrics"].items()}
    out.update({e: v["mean"] for e, v in split.get("extras", {}).items() if e in EXTRA_DIRECTIONS})
    return out


def _metric_summary(role: str) -> PerRun:
    def per_run(run: RunRecord):
        per_metric: dict[str, list[float]] = {}
        for split in _eval_splits(run, role):
            for m, v in _scores(split).items():
                if v is not None:
                    per_metric.setdefault(m, []).append(v)
        for m, vals in per_metric.items():
            yield m, statistics.fmean(vals)  # each domain weighs the same
    return per_run


def _metric_by_domain(role: str, metric: str) -> PerRun:
    def per_run(run: RunRecord):
        for split in _eval_splits(run, role):
            yield split["domain"], _scores(split).get(metric)
    return per_run


def _direction(name: str) -> str | None:
    from ..metrics import METRICS

    if name in METRICS:
        return METRICS.get(name).direction
    return EXTRA_DIRECTIONS.get(name)


def _metric_order() -> list[str]:
    from ..metrics import METRICS

    return METRICS.names() + list(EXTRA_DIRECTIONS)


def evaluation_note(setting: Setting) -> str:
    """How the explanation metrics were computed (one line per distinct evaluation config)."""
    configs = []
    for m in setting.methods:
        for r in (r for r in m.runs if r.evaluation is not None):
            c = r.evaluation["config"]
            n = ("all" if c["max_batches"] is None
                 else f"at most {c['max_batches'] * c['batch_size']}")
            line = (f"explainer {c['explainer']}, substrate {c['substrate']}, checkpoint "
                    f"{c['checkpoint']}, {n} images per split")
            if line not in configs:
                configs.append(line)
    if len(configs) > 1:
        return "Evaluations differ between runs (not comparable): " + "; ".join(configs) + "."
    return f"Explanations: {configs[0]}." if configs else ""


def selection_note(setting: Setting) -> str:
    """Which checkpoints the accuracies come from: each method's selection criterion, the range
    of its selected steps over runs and, where it has one, the end of its warm-up (ALIGN:
    guidance start), before which no checkpoint is selected."""
    parts = []
    for m in setting.methods:
        steps = sorted(r.selected["step"] for r in m.runs)
        starts = sorted({r.summary.get("objective_start", 0) for r in m.runs} - {0})
        criteria = "/".join(sorted({r.selection for r in m.runs}))
        span = f"{steps[0]}" if steps[0] == steps[-1] else f"{steps[0]}-{steps[-1]}"
        warm = f", warm-up until {'/'.join(map(str, starts))}" if starts else ""
        parts.append(f"{m.label}: {criteria}, step {span}{warm}")
    return "Selected checkpoints: " + "; ".join(parts) + "."


def build_tables(setting: Setting) -> list[Table]:
    """Every table of one setting, in report order (empty tables left out)."""
    domains = list(setting.domains)
    tables = []
    selection = selection_note(setting)
    for role, role_name in ROLES:
        tables.append(_table(setting, f"accuracy_{role}", f"Accuracy, {role_name} (%)",
                             _accuracy(role), domains, lambda c: "higher", avg=True,
                             note=f"{ACCURACY_NOTES[role]} {selection}", names=str))
    note = evaluation_note(setting)
    order = _metric_order()
    for role, role_name in ROLES:
        tables.append(_table(setting, f"explanations_{role}",
                             f"Explanation metrics, {role_name} (x100, mean over domains)",
                             _metric_summary(role), order, _direction, avg=False, note=note))
    for role, role_name in ROLES:
        for metric in order:
            t = _table(setting, f"{metric}_{role}", f"{display_name(metric)}, {role_name} (x100)",
                       _metric_by_domain(role, metric), domains,
                       lambda c, m=metric: _direction(m), avg=True, note=note, names=str)
            if t is not None and len(t.columns) > 2:  # more than one domain (+ avg)
                tables.append(t)
    return [t for t in tables if t is not None]


# ------------------------------------------------------------------ rendering
def format_cell(cell: Cell | None) -> str:
    return format_mean_std(cell, SCALE, DECIMALS, MISSING)


def arrow(direction: str | None, up: str, down: str) -> str:
    return {"higher": f" {up}", "lower": f" {down}"}.get(direction or "", "")


LEGEND = ("Mean ± std over seeds (x100); one value when there is one seed. Best per column in "
          "bold; ↑ higher is better, ↓ lower is better.")


def to_markdown(sections: list[tuple[Setting, list[Table]]]) -> str:
    lines = ["# Results", "", LEGEND, ""]
    for setting, tables in sections:
        lines += [f"## {setting.title}", ""]
        for t in tables:
            best = t.best()
            lines += [f"### {t.title}", ""]
            if t.note:
                lines += [t.note, ""]
            head = ["method", "seeds"] + [c + arrow(d, "↑", "↓") for c, d in zip(t.columns, t.directions)]
            rows = [[label, seeds] + [f"**{format_cell(c)}**" if i in best[j] else format_cell(c)
                                      for j, c in enumerate(cells)]
                    for i, (label, seeds, cells) in enumerate(t.rows)]
            lines.append(markdown_table(head, rows, right=[False] + [True] * (len(head) - 1)))
            lines.append("")
    return "\n".join(lines)


def to_csv(sections: list[tuple[Setting, list[Table]]]) -> str:
    """Long format: one line per (setting, table, method, column); values x100."""
    head = ["setting", "table", "method", "seeds", "column", "direction", "mean", "std", "n", "best"]
    rows = []
    for setting, tables in sections:
        for t in tables:
            best = t.best()
            for i, (label, seeds, cells) in enumerate(t.rows):
                for j, (col, cell) in enumerate(zip(t.columns, cells)):
                    mean = "" if cell is None else f"{cell.mean * SCALE:.4f}"
                    std = "" if cell is None or cell.std is None else f"{cell.std * SCALE:.4f}"
                    rows.append([setting.slug, t.key, label, seeds, col, t.directions[j] or "",
                                 mean, std, "" if cell is None else cell.n,
                                 "*" if i in best[j] else ""])
    return csv_table(head, rows)


def _tex_value(cell: Cell | None, best: bool) -> TexRaw:
    if cell is None:
        return TexRaw("--")
    text = f"{cell.mean * SCALE:.{DECIMALS}f}"
    if cell.std is not None:
        text += f" $\\pm$ {cell.std * SCALE:.{DECIMALS}f}"
    return TexRaw(f"\\textbf{{{text}}}" if best else text)


def to_latex(sections: list[tuple[Setting, list[Table]]]) -> str:
    """One booktabs `table` per table (needs \\usepackage{booktabs})."""
    out = ["% Generated by `align report`; needs \\usepackage{booktabs}.", ""]
    for setting, tables in sections:
        for t in tables:
            best = t.best()
            head = ["method", "seeds"] + [
                TexRaw(tex_escape(c) + arrow(d, "$\\uparrow$", "$\\downarrow$"))
                for c, d in zip(t.columns, t.directions)]
            rows = [[label, seeds] + [_tex_value(c, i in best[j]) for j, c in enumerate(cells)]
                    for i, (label, seeds, cells) in enumerate(t.rows)]
            out += [latex_table(head, rows, caption=f"{setting.title}. {t.title}.",
                                label=tex_label(setting.slug, t.key),
                                align="lr" + "r" * len(t.columns)), ""]
    return "\n".join(out)
