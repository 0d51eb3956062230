"""`make_report`: tables, figures and index.html from run directories (a pure function of them).

    make_report(["runs/erm", "runs/align"], "report")  ->  report/index.html

    report/
      tables.md, tables.csv, tables.tex   every table (see `paper_tables`)
      figures/*.png, figures/*.pdf        examples, deletion/insertion curves, training curves
      index.html                          all of it on one offline page

Inputs are only files: each run's config.json, protocol.json, summary.json, results.jsonl and
what `align evaluate` wrote, evaluation.json and examples.npz (read through `align.rundir`; no
network is loaded, so the golden test covers every figure). A run directory named without them
(a run not evaluated, say) is an error that names it and the command to run. A folder of runs
(a sweep) is searched: its runs not finished are left out, those not evaluated give their
accuracies only, and both are listed under "Notes" in index.html, as is whatever cannot be
drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .. import io
from ..rundir import RunFiles
from .collect import RunDirError, find_run_dirs, group_settings, load_run_record
from .paper_tables import build_tables, to_csv, to_latex, to_markdown

TABLE_FILES = ("tables.md", "tables.csv", "tables.tex")
#: Everything a report writes in its folder (what a user's own files must not be).
REPORT_FILES = (*TABLE_FILES, "figures", "index.html")


def _earlier_report(out: Path) -> bool:
    """A report written before `io.claim_output_folder`'s marker: align's index.html."""
    try:
        return "<title>align report</title>" in (out / "index.html").read_text()[:400]
    except (OSError, UnicodeDecodeError):
        return False


def _load(paths: Sequence[str | Path]):
    """(runs, [(setting, tables)], notes) of run directories and folders of runs."""
    paths = list(dict.fromkeys(Path(p) for p in paths))
    if not paths:
        raise RunDirError("no run directories given")
    runs, notes = [], []
    # A run named twice (`r` and `/abs/r`, or a run and a folder holding it) is read once: its
    # values counted twice would weigh in its seed's means twice.
    seen: set[Path] = set()
    for path in paths:
        if (path / "config.json").is_file():  # named: finished and evaluated, or an error
            if path.resolve() not in seen:
                runs.append(load_run_record(path))
            seen.add(path.resolve())
            continue
        for found in find_run_dirs([path]):
            if found.resolve() in seen:
                continue
            seen.add(found.resolve())
            if not RunFiles(found).is_finished():
                notes.append(f"{found}: not finished, left out")
                continue
            runs.append(load_run_record(found, evaluated=False))
            if runs[-1].evaluation is None:
                notes.append(f"{found}: not evaluated, accuracy only (`align evaluate {found}`)")
    if not runs:
        raise RunDirError(f"no finished run in {', '.join(map(str, paths))}")
    settings = group_settings(runs)
    return runs, [(s, build_tables(s)) for s in settings], notes


def write_tables(run_dirs: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Only the tables: tables.md, tables.csv and tables.tex in out_dir (atomically)."""
    out = Path(out_dir)
    _, sections, _ = _load(run_dirs)
    return _write_tables(sections, out)


def _write_tables(sections, out: Path) -> list[Path]:
    io.claim_output_folder(out, REPORT_FILES, "align report", _earlier_report)
    texts = (to_markdown(sections), to_csv(sections), to_latex(sections))
    for name, text in zip(TABLE_FILES, texts):
        io.write_text(out / name, text)
    return [out / n for n in TABLE_FILES]


def make_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *, figures: bool = True,
                n_examples: int | None = None) -> Path:
    """Write the report of `run_dirs` (run directories, or folders searched for runs, see the
    module docstring) into `out_dir`; returns the path of its index.html.

    `n_examples`: rows of the examples figure (default: every example the evaluations saved)."""
    from . import figures as figs
    from .html import render

    out = Path(out_dir)
    runs, sections, notes = _load(run_dirs)
    _write_tables(sections, out)
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
