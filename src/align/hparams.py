"""Hyperparameters declared next to the code that uses them.

Each algorithm (and the training loop) declares its hyperparameters as `HParam`s: a default, a
search range for sweeps, and a one-line source ("DRE code", "paper", "our choice"). A run's resolved
hyperparameters are the defaults overridden by the user's config; unknown keys are errors.

Sweeps draw values with `seed_hash(seed, name)` per hyperparameter (DomainBed's idea), so adding a
hyperparameter does not shift the draws of the others.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class HParam:
    """One hyperparameter.

    Args:
        default: value used when the user sets none.
        source: where the default comes from ("paper", "DRE code", "our choice", ...).
        help: one line for the docs.
        search: optional sweep range: ("log", lo, hi), ("uniform", lo, hi) or ("choice", [values]).
    """

    default: Any
    source: str
    help: str = ""
    search: tuple | None = None

    def sample(self, rng: random.Random) -> Any:
        if self.search is None:
            return self.default
        kind = self.search[0]
        if kind == "log":
            lo, hi = self.search[1], self.search[2]
            return float(10 ** rng.uniform(math.log10(lo), math.log10(hi)))
        if kind == "uniform":
            return float(rng.uniform(self.search[1], self.search[2]))
        if kind == "choice":
            return rng.choice(list(self.search[1]))
        raise ValueError(f"unknown search kind {kind!r}")


def seed_hash(*args: Any) -> int:
    """A stable 31-bit integer hash of its arguments (the same in every process)."""
    text = str(args).encode()
    return int(hashlib.md5(text).hexdigest(), 16) % (2**31)


def _coerce(name: str, default: Any, value: Any, owner: str) -> Any:
    """Check a user value against the default's type; ints are accepted where floats are."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{owner}: hyperparameter {name!r} must be true/false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{owner}: hyperparameter {name!r} must be finite, got {value!r}")
        # Learning rates must be positive and decays non-negative (an optimiser would only
        # complain at its first step, after the run's files were written).
        if (name == "lr" or name.endswith("_lr")) and value <= 0:
            raise ValueError(f"{owner}: hyperparameter {name!r} must be > 0, got {value!r}")
        if name.endswith("weight_decay") and value < 0:
            raise ValueError(f"{owner}: hyperparameter {name!r} must be >= 0, got {value!r}")
        return float(value)
    if isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    raise ValueError(
        f"{owner}: hyperparameter {name!r} expects {type(default).__name__}, got {value!r}"
    )


def resolve(
    spec: Mapping[str, HParam], overrides: Mapping[str, Any] | None, owner: str
) -> dict[str, Any]:
    """Defaults of `spec` overridden by `overrides`. Unknown keys raise a `ValueError` naming them."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(spec))
    if unknown:
        raise ValueError(
            f"{owner}: unknown hyperparameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(spec))}"
        )
    out = {k: h.default for k, h in spec.items()}
    for k, v in overrides.items():
        out[k] = _coerce(k, spec[k].default, v, owner)
    return out


def sample(spec: Mapping[str, HParam], seed: int, owner: str) -> dict[str, Any]:
    """Random hyperparameters for a sweep; seed 0 gives the defaults (DomainBed convention)."""
    if seed == 0:
        return {k: h.default for k, h in spec.items()}
    return {k: h.sample(random.Random(seed_hash(seed, owner, k))) for k, h in spec.items()}


def table(spec: Mapping[str, HParam]) -> Sequence[tuple[str, Any, str, str]]:
    """(name, default, source, help) rows, for docs and `align train --help`."""
    return [(k, h.default, h.source, h.help) for k, h in spec.items()]


def markdown_table(spec: Mapping[str, HParam]) -> str:
    """The defaults table of the docs (`align hparams NAME`): one row per hyperparameter with its
    default, meaning, source and sweep range. The docs embed this output verbatim between
    `<!-- hparams:NAME -->` markers, and a test keeps them equal, so the table cannot drift."""
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|")

    def search(h: HParam) -> str:
        if h.search is None:
            return "-"
        kind, *rest = h.search
        return f"{kind} {rest[0]}" if kind == "choice" else f"{kind} [{rest[0]:g}, {rest[1]:g}]"

    lines = ["| hyperparameter | default | meaning | source | sweep |", "|---|---|---|---|---|"]
    for name, h in spec.items():
        default = "null" if h.default is None else (str(h.default).lower()
                                                    if isinstance(h.default, bool) else h.default)
        lines.append(f"| `{name}` | {cell(default)} | {cell(h.help)} | {cell(h.source)} "
                     f"| {cell(search(h))} |")
    return "\n".join(lines) + "\n"
