"""The dataset commands of the `align` command line: `align prepare` and `align check`.

Both raise `DataError` (and `KeyError` for an unknown dataset name) with a message that says what
and where; the command line's error boundary prints it without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .data.check import CheckResult, check_dataset
from .data.prepare import RECIPES, prepare

_NAMES = ", ".join(RECIPES.names())


def prepare_command(
    name: Annotated[str, typer.Argument(help=f"Dataset: {_NAMES}.")],
    root: Annotated[Path, typer.Option(
        help="Data folder (DomainBed's --data_dir); the dataset becomes ROOT/<its DomainBed "
             "folder>, e.g. ROOT/VLCS.")],
    archive: Annotated[Optional[list[Path]], typer.Option(
        help="A local copy of a source archive, used instead of downloading it; repeat for "
             "several (matched by file name, see docs/datasets.md).")] = None,
    mirror: Annotated[Optional[str], typer.Option(
        help="Base URL that serves the archives under their file names (URL/VLCS.tar.gz), used "
             "instead of the original hosts (clusters without internet).")] = None,
    checksum: Annotated[bool, typer.Option(
        help="Verify the archives that have a published checksum.")] = True,
    decode: Annotated[bool, typer.Option(
        help="Decode every image in the final check (--no-decode only counts files).")] = True,
) -> None:
    """Download, extract, lay out and check a DomainBed dataset (moved into place if it passes)."""
    console = Console(stderr=True)
    result = prepare(name, root, archives=archive or (), mirror=mirror, checksums=checksum,
                     decode=decode, console=console)
    verb = "prepared" if result.created else "already prepared, left as is:"
    _print_check(Console(), result.check, f"{verb} {result.target}")


def check_command(
    path: Annotated[Path, typer.Argument(
        help="The dataset folder: PATH/<domain>/<class>/<image>.")],
    dataset: Annotated[str, typer.Option(help=f"Which dataset it should be: {_NAMES}.")],
    decode: Annotated[bool, typer.Option(
        help="Decode every image (--no-decode only counts files).")] = True,
) -> None:
    """Check a dataset folder: domains, classes, image counts; names the release it matches."""
    _print_check(Console(), check_dataset(path, dataset, decode=decode), "check passed")


def _print_check(console: Console, check: CheckResult, headline: str) -> None:
    per_domain = check.release.per_domain
    table = Table()
    table.add_column("domain")
    table.add_column("images", justify="right")
    table.add_column("expected", justify="right")
    for domain, classes in check.counts.items():
        expected = "-" if per_domain is None else f"{per_domain[domain]:,}"
        table.add_row(domain, f"{sum(classes.values()):,}", expected)
    console.print(table)
    console.print(check.summary(), highlight=False)
    console.print(headline, highlight=False)


def register(app: typer.Typer) -> None:
    """Add `align prepare` and `align check` to the command line."""
    app.command("prepare")(prepare_command)
    app.command("check")(check_command)
