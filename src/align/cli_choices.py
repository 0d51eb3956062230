"""Options whose values are a registry's names, for every command module of the CLI."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import typer


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
