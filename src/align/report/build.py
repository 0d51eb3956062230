"""`make_report`: tables, figures and index.html from run directories (a pure function of them).

    make_report(["runs/erm", "runs/align"], "report")  ->  report/index.html

    report/
      tables.md, tables.csv, tables.tex   every table (see `paper_tables`)
      figures/*.png, figures/*.pdf        examples, deletion/insertion curves, training curves
      index.html                          all of it on one offline page

Inputs are only files: each run's config.json, protocol.json, summary.json, results.jsonl and
what `align evaluate` wrote, evaluation.json and examples.npz (read through `align.rundir`; no
network is loaded, so the golden test covers every figure). A run directory without them (a run
not evaluated, say) is an error that names it and the command to run. Whatever cannot be drawn
is skipped and said so under "Notes" in index.html.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .. import io
from .collect import RunDirError, group_settings, load_run_record
from .paper_tables import build_tables, to_csv, to_latex, to_markdown

TABLE_FILES = ("tables.md", "tables.csv", "tables.tex")


def _load(run_dirs: Sequence[str | Path]):
    paths = list(dict.fromkeys(Path(p) for p in run_dirs))
    if not paths:
        raise RunDirError("no run directories given")
    runs = [load_run_record(p) for p in paths]
    settings = group_settings(runs)
    return runs, [(s, build_tables(s)) for s in settings]


def write_tables(run_dirs: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Only the tables: tables.md, tables.csv and tables.tex in out_dir (atomically)."""
    out = Path(out_dir)
    _, sections = _load(run_dirs)
    return _write_tables(sections, out)


def _write_tables(sections, out: Path) -> list[Path]:
    texts = (to_markdown(sections), to_csv(sections), to_latex(sections))
    for name, text in zip(TABLE_FILES, texts):
        io.write_text(out / name, text)
    return [out / n for n in TABLE_FILES]


def make_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *, figures: bool = True,
                n_examples: int | None = None) -> Path:
    """Write the report of `run_dirs` into `out_dir`; returns the path of its index.html.

    `n_examples`: rows of the examples figure (default: every example the evaluations saved)."""
    from . import figures as figs
    from .html import render

    out = Path(out_dir)
    runs, sections = _load(run_dirs)
    _write_tables(sections, out)
    notes: list[str] = []
    page = []
    for setting, tables in sections:
        made = []
        if figures:
            steps = [lambda: figs.examples_figure(setting, out, n_examples),
                     lambda: figs.curves_figure(setting, out)]
            steps += [lambda m=m: figs.training_figure(m, setting, out) for m in setting.methods]
            for step in steps:
                fig, why = step()
                notes += why
                if fig is not None:
                    made.append(fig)
        page.append((setting, tables, made))
    index = out / "index.html"
    io.write_text(index, render(page, runs, notes, list(TABLE_FILES)))
    return index
