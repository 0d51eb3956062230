"""The `align` command line's machinery, shared by every command module: the app and its one
error boundary (`AlignCommands`), the console, options whose choices come from a registry
(`one_of`), and the expansion of multi-value options (`expand_multi`)."""

from __future__ import annotations

import errno
from typing import Any, Callable, Iterable

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from .errors import UserError

#: Reported as a message, not a traceback: the project's errors, the ValueError with which the
#: lower layers refuse a bad value, the file system's (a missing or unwritable path, a full disk).
USER_ERRORS = (UserError, ValueError, OSError)


def error_message(err: BaseException) -> str:
    """The one-paragraph message of a user error."""
    message = str(err)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        message += (" -- the disk is full: free some space and run the same command again; "
                    "training resumes from its last checkpoint and no finished result is lost")
    return message


class AlignCommands(TyperGroup):
    """The command group, and the CLI's one error boundary around every command."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as err:
            # Text, not markup: a message may hold brackets ("[0, 1]") that rich would eat.
            console.print(Text.assemble(("error: ", "bold red"), error_message(err)))
            raise typer.Exit(code=2) from None


app = typer.Typer(cls=AlignCommands, add_completion=False, no_args_is_help=True,
                  help="ALIGN and explanation-guided learning baselines (arXiv 2511.06944).")
# Lines are not wrapped at the terminal's width, so a printed path stays one copyable string.
console = Console(soft_wrap=True)


def one_of(choices: Iterable[str], help: str, param: Callable[..., Any] = typer.Option) -> Any:
    """A `typer.Option` (or `param`) whose help lists `choices` (a registry: with each object's
    `help` where it has one) and which refuses any other value before the command runs."""
    names = list(choices)
    lookup = getattr(choices, "get", None)

    def label(name: str) -> str:
        about = getattr(lookup(name), "help", "") if lookup else ""
        return f"{name} ({about})" if isinstance(about, str) and about else name

    def check(value: Any) -> Any:
        for v in [] if value is None else value if isinstance(value, list) else [value]:
            if v not in names:
                raise typer.BadParameter(f"{v!r} is not one of: {', '.join(names)}")
        return value

    labels = [label(n) for n in names]
    sep = ", " if labels == names else "; "
    return param(help=f"{help} One of: {sep.join(labels)}.", callback=check)


_MULTI = ("--test-domains", "--train-domains", "--algorithms", "--seeds", "--levels", "--metrics", "--set")


def expand_multi(argv: list[str]) -> list[str]:
    """Let `--test-domains A B` mean `--test-domains A --test-domains B` (click takes one value
    per option occurrence)."""
    out: list[str] = []
    flag = None
    for arg in argv:
        if arg.startswith("-"):
            flag = arg if arg in _MULTI else None
            out.append(arg)
        elif flag and out[-1] != flag:
            out += [flag, arg]
        else:
            out.append(arg)
    return out
