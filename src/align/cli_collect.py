"""`align collect SWEEP_DIR`: the paper's tables over a sweep, with DomainBed's model selection
across checkpoints and hyperparameter draws (`align.report.collect_sweep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_base import console, one_of
from .training.selection import SWEEP_SELECTIONS

#: Missing items printed on the terminal; results.md lists them all.
SHOWN_MISSING = 10


def collect_command(
    sweep_dir: Annotated[Path, typer.Argument(
        help="A sweep folder: run directories anywhere below it (finished or not).")],
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for results.md/.csv/.tex, hparams.csv and selected.json "
             "(default: SWEEP_DIR/collected).")] = None,
    selection: Annotated[Optional[list[str]], one_of(
        SWEEP_SELECTIONS, "Model selection(s) (repeatable; default: all).")] = None,
) -> None:
    """Select a checkpoint and a hyperparameter draw per algorithm, test domain and trial seed
    under each model selection; write the tables (mean ± standard error over seeds) and the
    selected hyperparameters; name what a partial sweep is missing."""
    from .report.collect_sweep import write_collect

    files, missing = write_collect(sweep_dir, out or sweep_dir / "collected", selection)
    console.print(f"wrote {', '.join(str(f) for f in files)}")
    if missing:
        console.print(f"[yellow]missing: {len(missing)}[/] (partial sweep)")
        for line in missing[:SHOWN_MISSING]:
            console.print(f"  {line}", markup=False, highlight=False)
        if len(missing) > SHOWN_MISSING:
            console.print(f"  ... and {len(missing) - SHOWN_MISSING} more: see {files[0]}",
                          markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add `align collect` to the command line."""
    app.command("collect")(collect_command)
