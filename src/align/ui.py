"""Terminal output shared by the commands: progress bars and result tables.

Names from the user's data and paths (domains, splits, run directories) go through rich's
`escape`: rich reads "[...]" as markup, and a domain 'site[night]' was shown as 'site'.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .report.tables import comparison_table, masker_iou_table
from .training.logs import eval_line
from .training.loop import Progress
from .training.selection import SELECTION_METHODS


@contextmanager
def progress_bar(total: int, label: str, console: Console | None = None) -> Iterator[Progress]:
    """A rich progress bar driven by the training loop's callbacks; without a terminal (a batch
    job's log), one plain line per evaluation instead (`training.logs.eval_line`)."""
    console = console or Console()
    if not console.is_terminal:
        def print_line(record: dict) -> None:
            print(eval_line(record, label, total), file=console.file, flush=True)

        yield Progress(on_eval=print_line)
        return
    bar = RichProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console, transient=False,
    )
    task = bar.add_task(escape(label), total=total, info="")
    state = {"info": ""}

    def on_step(step: int, terms: dict) -> None:
        bar.update(task, completed=step + 1)

    def on_eval(record: dict) -> None:
        loss = record["losses"].get("loss")
        speed = f"{record['images_per_s']:.0f} img/s, peak {record['peak_memory_mib']:.0f} MiB"
        state["info"] = f"loss {loss:.3f}, {speed}" if loss is not None else speed
        bar.update(task, info=state["info"])

    with bar:
        yield Progress(on_step=on_step, on_eval=on_eval)


def print_summary(console: Console, runs: dict[str, tuple[dict, dict]]) -> None:
    """Print per-domain tables under every model-selection method that all runs report (runs
    written before `val_loss` existed have no entry for it)."""
    for method in SELECTION_METHODS:
        if all(method in summary for summary, _ in runs.values()):
            console.print(comparison_table(runs, title=f"accuracy (model selection: {method})",
                                           method=method))
    iou = masker_iou_table(runs)
    if iou is not None:
        console.print(iou)


@contextmanager
def eval_progress_bar(label: str, console: Console | None = None) -> Iterator:
    """A rich progress bar for `evaluate_run(progress=...)`: batches done over all splits."""
    bar = RichProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console, transient=False,
    )
    task = bar.add_task(escape(label), total=None, info="")

    def update(split: str, done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, info=escape(split))

    with bar:
        yield update


def evaluation_table(record: dict, title: str, preset: str | None = None) -> Table:
    """One column per evaluated split of an `evaluation.json` record (`align evaluate`), one row
    per score: accuracy, the metrics, then the algorithm's extras."""
    splits, cfg = record["splits"], record["config"]
    title = f"{title} (step {cfg['step']}, {cfg['explainer']}, {cfg['substrate']})"
    table = Table(title=escape(title if preset is None else f"{title}, preset {preset}"))
    table.add_column("")
    for key, s in splits.items():
        table.add_column(f"{escape(key)}\n{s['role']}, n={s['n']}", justify="right")
    rows = {"accuracy": [s["accuracy"] for s in splits.values()]}
    for name in cfg["metrics"]:
        rows[name] = [s["metrics"][name]["mean"] for s in splits.values()]
    for name in sorted({e for s in splits.values() for e in s["extras"]}):
        rows[name] = [s["extras"].get(name, {}).get("mean") for s in splits.values()]
    for name, vals in rows.items():
        table.add_row(name, *("-" if v is None else f"{v:.3f}" for v in vals))
    return table
