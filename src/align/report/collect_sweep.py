"""`align collect SWEEP_DIR`: DomainBed's model selection across checkpoints and hyperparameter
draws, as the paper's tables (a pure function of the run directories; `write_collect` writes it).

    collect(read_sweep("sweeps/vlcs")) -> [Section]     write_collect("sweeps/vlcs", "out")

For each setting of the sweep (`sweep_runs`: a dataset under one protocol) and each selection of
`SWEEP_SELECTIONS` (training-domain validation, the oracle, DRE's validation loss, last), every
(method, test env, trial seed) gets the draw that `select_draw` picks; its chosen checkpoint's
accuracies fill the tables, in the shape of the setting's protocol:

- leave-one-domain-out (the protocol names test domains): rows = methods, columns = held-out
  domains + avg, each cell the held-out domain's test accuracy (its `in` split);
- in-distribution (it names none): rows = methods, columns = domains + avg, each cell the
  domain's held-out test split (as the paper's VLCS and TerraIncognita tables, docs/sweeps.md);
- single-source (it names the source): per method, a source -> target matrix (rows = sources,
  columns = targets + avg, the diagonal empty), and one table of the mean over targets per
  source (rows = methods).

A cell is the mean ± standard error over trial seeds, the sample std beside it, x100
(`stats.format_mean_se`; one seed: the mean alone); `avg` is the mean over columns per seed (seeds
with every column), then over seeds. The best mean of a column is bold. Beside each table, the
selected hyperparameters per method: which draw each (test env, seed) got, and its values.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .. import io
from ..training.selection import SWEEP_SELECTIONS, Choice, SweepSelection, select_draw
from .collect import format_value
from .paper_tables import SCALE, Table
from .stats import format_mean_se, seed_cells, standard_error
from .sweep_runs import Env, Sweep, SweepMethod, SweepSetting, env_label, read_sweep
from .writers import TexRaw, csv_table, latex_table, markdown_table, tex_label

DECIMALS = 2  # as `align report` and the paper
MISSING = "-"
OUTPUT_FILES = ("results.md", "results.csv", "results.tex", "hparams.csv", "selected.json")
LEGEND = ("Accuracy x100: mean ± standard error over trial seeds (sd: their sample standard "
          "deviation); the mean alone for one seed. avg: the mean over the columns per seed "
          "(seeds with every column), then over seeds. Best mean per column in bold.")

#: (method label, test env, seed) -> the selected draw (None: no draw has a scored record).
Choices = dict[tuple[str, Env, int], "Choice | None"]


@dataclass
class HParamTable:
    """The draws one selection picked for one method: per (test env, seed) the draw id and the
    hyperparameters that vary between the method's draws (the others in `fixed`)."""

    method: str
    env_name: str  # what the first column holds (`SweepSetting.env_name`)
    names: list[str]
    rows: list[tuple[str, int, str, list]]  # (test env label, seed, draw id, values)
    fixed: dict


@dataclass
class Section:
    """One setting under one selection: its accuracy tables and the selected hyperparameters."""

    setting: SweepSetting
    selection: SweepSelection
    choices: Choices
    tables: list[Table]
    hparams: list[HParamTable]


# ------------------------------------------------------------------ selection
def choose(setting: SweepSetting, selection: SweepSelection) -> Choices:
    """Every (method, test env, seed) of the setting: the draw `selection` picks among the
    finished runs, tried in draw-id order (ties go to the smaller id)."""
    out: Choices = {}
    for m in setting.methods:
        for (env, seed), draws in m.runs.items():
            protocol = next(iter(draws.values())).protocol
            out[(m.label, env, seed)] = select_draw(
                selection, [(run, run.records, run.objective_start)
                            for _, run in sorted(draws.items())], protocol)
    return out


def _test_acc(choice: Choice) -> float:
    keys = choice.key.protocol["test_keys"]
    return statistics.fmean(choice.record["acc"][k] for k in keys)


def _per_domain(choice: Choice) -> dict[str, float]:
    """Each test domain's accuracy on its test split."""
    return {k.rsplit("_", 1)[0]: choice.record["acc"][k] for k in choice.key.protocol["test_keys"]}


def _row(m: SweepMethod, choices: Choices, values) -> tuple[dict[int, dict[str, float]], int]:
    """seed -> column -> value over the method's choices (`values(env, choice)` -> {column:
    value}), and the number of seeds with a value."""
    per_seed: dict[int, dict[str, float]] = {}
    for (label, env, seed), c in choices.items():
        if label == m.label and c is not None:
            per_seed.setdefault(seed, {}).update(values(env, c))
    return per_seed, len(per_seed)


def _table(key: str, title: str, columns: list[str], rows, note: str = "") -> Table:
    """A Table of `rows` [(label, per_seed, n seeds)] with an avg column; higher is better."""
    cells = [(label, n, seed_cells(per_seed, columns, avg=True)) for label, per_seed, n in rows]
    return Table(key, title, columns + ["avg"], ["higher"] * (len(columns) + 1), cells, note)


def _matrix(setting: SweepSetting, m: SweepMethod, choices: Choices) -> Table:
    """A method's source -> target matrix: a row per source, a column per domain (the source's
    own column empty) and the avg over the row's targets."""
    domains, rows = list(setting.domains), []
    for env in setting.envs():
        source = {k: c for k, c in choices.items() if k[1] == env}
        per_seed, n = _row(m, source, lambda env, c: _per_domain(c))
        targets = [d for d in domains if d not in env]
        cells = dict(zip(targets + ["avg"], seed_cells(per_seed, targets, avg=True)))
        rows.append((env_label(env), n, [cells.get(d) for d in domains + ["avg"]]))
    return Table(f"matrix:{m.label}", f"{m.label}: source -> target accuracy (%)",
                 domains + ["avg"], [None] * (len(domains) + 1), rows,
                 "Rows: the source domain trained on; columns: the target domain tested (a "
                 "source is not its own target); avg: over the row's targets.")


def tables(setting: SweepSetting, choices: Choices) -> list[Table]:
    """The setting's accuracy tables, shaped by what its protocol names (module docstring)."""
    if setting.named is None:
        rows = [(m.label, *_row(m, choices, lambda env, c: _per_domain(c)))
                for m in setting.methods]
        return [_table("accuracy", "Accuracy per domain (%), on each domain's held-out test "
                       "split", list(setting.domains), rows)]
    envs = [env_label(e) for e in setting.envs()]
    rows = [(m.label, *_row(m, choices, lambda env, c: {env_label(env): _test_acc(c)}))
            for m in setting.methods]
    if setting.named == "test_domains":
        return [_table("accuracy", "Accuracy on the held-out domain (%)", envs, rows)]
    return [_table("accuracy", "Accuracy per source (%), the mean over its target domains",
                   envs, rows)] + [_matrix(setting, m, choices) for m in setting.methods]


def hparam_tables(setting: SweepSetting, choices: Choices) -> list[HParamTable]:
    """Per method, the draw each (test env, seed) got under the selection, and its values."""
    out = []
    for m in setting.methods:
        draws = m.draws()
        if not draws:  # nothing finished yet
            continue
        names = sorted({n for h in draws.values() for n in h})
        varying = [n for n in names if len({json.dumps(h.get(n)) for h in draws.values()}) > 1]
        first = next(iter(draws.values()))
        fixed = {n: first.get(n) for n in names if n not in varying}
        rows = []
        for (label, env, seed), c in choices.items():
            if label == m.label and c is not None:
                rows.append((env_label(env), seed, c.key.draw,
                             [c.key.hparams.get(n) for n in varying]))
        out.append(HParamTable(m.label, setting.env_name, varying, rows, fixed))
    return out


def collect(sweep: Sweep, selections: Sequence[str] | None = None) -> list[Section]:
    """Every setting of `sweep` under every selection (default: all of `SWEEP_SELECTIONS`)."""
    out = []
    for setting in sweep.settings:
        for name in selections or SWEEP_SELECTIONS.names():
            method = SWEEP_SELECTIONS.get(name)
            chosen = choose(setting, method)
            out.append(Section(setting, method, chosen, tables(setting, chosen),
                               hparam_tables(setting, chosen)))
    return out


# ------------------------------------------------------------------ rendering
def _cell(cell, best: bool) -> str:
    text = format_mean_se(cell, SCALE, DECIMALS, MISSING)
    return f"**{text}**" if best and cell is not None else text


def _hparam_rows(h: HParamTable) -> tuple[list[str], list[list]]:
    head = [h.env_name, "seed", "draw", *h.names]
    return head, [[e, s, d, *map(format_value, vals)] for e, s, d, vals in h.rows]


def _fixed(h: HParamTable) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in h.fixed.items())


def _missing_lines(sweep: Sweep, sections: list[Section]) -> list[str]:
    lines = sweep.missing()
    for s in sections:
        lines += [f"{s.setting.where(label, env, seed)}: no draw has what {s.selection.name} "
                  "needs (no scored record)"
                  for (label, env, seed), c in s.choices.items() if c is None]
    return lines


def to_markdown(sweep: Sweep, sections: list[Section]) -> str:
    missing = _missing_lines(sweep, sections)
    lines = ["# Sweep results", "", LEGEND, "",
             f"Finished runs: {sweep.n_finished}. Missing: {len(missing)}"
             + (" (listed at the end)." if missing else "."), ""]
    current = None
    for s in sections:
        if s.setting is not current:
            current = s.setting
            lines += [f"## {current.title}", ""]
        about = s.selection.help[:1].upper() + s.selection.help[1:]
        lines += [f"### Selection: {s.selection.title}", "", f"{about}.", ""]
        for t in s.tables:
            best = t.best()
            lines += [f"#### {t.title}", ""] + ([t.note, ""] if t.note else [])
            rows = [[label, n, *(_cell(c, i in best[j]) for j, c in enumerate(cells))]
                    for i, (label, n, cells) in enumerate(t.rows)]
            lines += [markdown_table(["", "seeds", *t.columns], rows,
                                     right=[False] + [True] * (len(t.columns) + 1)), ""]
        for h in s.hparams:
            head, rows = _hparam_rows(h)
            lines += [f"#### Selected hyperparameters: {h.method}", "",
                      markdown_table(head, rows), ""]
            if h.fixed:
                lines += [f"The same in every draw: {_fixed(h)}.", ""]
    lines += ["## Missing", ""] + ([f"- {m}" for m in missing] or ["Nothing."]) + [""]
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v * SCALE:.4f}"


def to_csv(sections: list[Section]) -> str:
    """Long format: one line per (setting, selection, table, row, column); values x100."""
    head = ["setting", "selection", "table", "row", "seeds", "column", "mean", "se", "std", "n",
            "best"]
    rows = []
    for s in sections:
        for t in s.tables:
            best = t.best()
            for i, (label, n, cells) in enumerate(t.rows):
                for j, (col, c) in enumerate(zip(t.columns, cells)):
                    rows.append([s.setting.slug, s.selection.name, t.key, label, n, col,
                                 _num(c and c.mean), _num(c and standard_error(c)),
                                 _num(c and c.std), "" if c is None else c.n,
                                 "*" if i in best[j] else ""])
    return csv_table(head, rows)


def hparams_csv(sweep: Sweep, sections: list[Section]) -> str:
    """One line per (setting, selection, method, test env, seed, hyperparameter): the selected
    draw's value as JSON (exact), and its run directory."""
    head = ["setting", "selection", "method", "env", "seed", "draw", "hyperparameter", "value",
            "run"]
    rows = []
    for s in sections:
        for (label, env, seed), c in s.choices.items():
            if c is not None:
                rows += [[s.setting.slug, s.selection.name, label, env_label(env), seed,
                          c.key.draw, k, json.dumps(v), sweep.relative(c.key.path)]
                         for k, v in sorted(c.key.hparams.items())]
    return csv_table(head, rows)


def _tex_cell(cell, best: bool) -> TexRaw:
    if cell is None:
        return TexRaw("--")
    text = format_mean_se(cell, SCALE, DECIMALS).replace("±", "$\\pm$")
    return TexRaw(f"\\textbf{{{text}}}" if best else text)


def to_latex(sections: list[Section]) -> str:
    """One booktabs table per accuracy table and per selected-hyperparameters table."""
    out = ["% Generated by `align collect`; needs \\usepackage{booktabs}.", ""]
    for s in sections:
        where = f"{s.setting.title}, {s.selection.title}"
        for t in s.tables:
            best = t.best()
            rows = [[label, n, *(_tex_cell(c, i in best[j]) for j, c in enumerate(cells))]
                    for i, (label, n, cells) in enumerate(t.rows)]
            out += [latex_table(["", "seeds", *t.columns], rows, caption=f"{where}. {t.title}.",
                                label=tex_label(s.setting.slug, s.selection.name, t.key),
                                align="lr" + "r" * len(t.columns)), ""]
        for h in s.hparams:
            head, rows = _hparam_rows(h)
            fixed = f" The same in every draw: {_fixed(h)}." if h.fixed else ""
            out += [latex_table(head, rows, caption=f"{where}. Selected hyperparameters of "
                                f"{h.method}.{fixed}",
                                label=tex_label(s.setting.slug, s.selection.name, "hparams",
                                                h.method),
                                align="lrl" + "r" * len(h.names)), ""]
    return "\n".join(out)


def selected_json(sweep: Sweep, sections: list[Section]) -> dict:
    """Every selection with what re-running it needs: the draw's full hyperparameters, the
    run directory, the chosen step, the rank score and the test accuracy; and what is missing."""
    chosen = []
    for s in sections:
        for (label, env, seed), c in s.choices.items():
            if c is not None:
                chosen.append({
                    "setting": s.setting.slug, "selection": s.selection.name, "method": label,
                    "algorithm": c.key.algorithm, "env": list(env), "seed": seed,
                    "draw": c.key.draw, "hparams": c.key.hparams,
                    "run": sweep.relative(c.key.path), "step": c.record["step"],
                    "score": c.score, "test_acc": _test_acc(c)})
    return {"sweep": str(sweep.root), "selected": chosen, "missing": _missing_lines(sweep, sections)}


def _earlier_collect(out: Path) -> bool:
    """Tables written before `io.claim_output_folder`'s marker: align's selected.json."""
    try:
        return {"sweep", "selected", "missing"} <= set(io.read_json(out / OUTPUT_FILES[-1]))
    except (OSError, ValueError, TypeError):
        return False


def write_collect(sweep_dir: str | Path, out_dir: str | Path,
                  selections: Iterable[str] | None = None) -> tuple[list[Path], list[str]]:
    """Collect `sweep_dir` and write `OUTPUT_FILES` into `out_dir` (atomically, each).

    Returns (the files written, the missing lines).
    """
    sweep = read_sweep(sweep_dir)
    sections = collect(sweep, list(selections) if selections else None)
    out = io.claim_output_folder(out_dir, OUTPUT_FILES, "align collect", _earlier_collect)
    texts = (to_markdown(sweep, sections), to_csv(sections), to_latex(sections),
             hparams_csv(sweep, sections))
    for name, text in zip(OUTPUT_FILES, texts):
        io.write_text(out / name, text)
    record = selected_json(sweep, sections)
    io.write_json(out / OUTPUT_FILES[-1], record)
    return [out / n for n in OUTPUT_FILES], record["missing"]
