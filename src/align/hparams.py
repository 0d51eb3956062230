"""Hyperparameters declared next to the code that uses them.

Each algorithm (and the training loop) declares its hyperparameters as `HParam`s: a default, a
search range for sweeps, and a one-line source ("DRE code", "paper", "our choice"). A run's resolved
hyperparameters are the defaults overridden by the user's config; unknown keys are errors.

Sweeps draw values with `seed_hash(seed, owner, name)` per hyperparameter (DomainBed's idea), so
adding a hyperparameter does not shift the draws of the others.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConfigError
from .seeding import seed_hash

__all__ = ["HParam", "markdown_table", "resolve", "sample", "seed_hash"]

SEARCH_KINDS = ("log", "uniform", "choice")


@dataclass(frozen=True)
class HParam:
    """One hyperparameter.

    Args:
        default: value used when the user sets none.
        source: where the default comes from ("paper", "DRE code", "our choice", ...).
        help: one line for the docs.
        search: optional sweep range: ("log", lo, hi), ("uniform", lo, hi) or ("choice", [values]).
        choices: the only values allowed (checked by `resolve`), or None for any value of the
            default's type.
        bounds: the interval a number must lie in, in interval notation ("(0, inf)", "[1, inf)",
            "(0, 1)"), checked by `resolve` before anything is written; a value outside it would
            fail hours into a run (Beta(0, 0), a modulo by zero) or silently mean nothing.
    """

    default: Any
    source: str
    help: str = ""
    search: tuple | None = None
    choices: tuple | None = None
    bounds: str | None = None

    def __post_init__(self) -> None:
        # A malformed declaration fails at import, not in the middle of a sweep.
        if self.search is not None and self.search[0] not in SEARCH_KINDS:
            raise ValueError(f"search kind {self.search[0]!r} is not one of {SEARCH_KINDS}")
        if self.choices is not None:
            allowed = [self.default, *(self.search[1] if self.search and
                                       self.search[0] == "choice" else ())]
            bad = [v for v in allowed if v not in self.choices]
            if bad:
                raise ValueError(f"default or search value(s) {bad} not among choices {self.choices}")
        if self.bounds is not None:
            interval = _parse_bounds(self.bounds)
            ends = [] if self.search is None else (
                list(self.search[1]) if self.search[0] == "choice" else list(self.search[1:]))
            bad = [v for v in (self.default, *ends) if not _within(v, interval)]
            if bad:
                raise ValueError(f"default or search value(s) {bad} outside bounds {self.bounds}")

    def sample(self, rng: random.Random) -> Any:
        """One draw from `search` (the default when there is none)."""
        if self.search is None:
            return self.default
        kind, *args = self.search
        if kind == "log":
            return float(10 ** rng.uniform(math.log10(args[0]), math.log10(args[1])))
        if kind == "uniform":
            return float(rng.uniform(args[0], args[1]))
        return rng.choice(list(args[0]))


_BOUNDS = re.compile(r"^([\[(])\s*(\S+?)\s*,\s*(\S+?)\s*([\])])$")


def _parse_bounds(text: str) -> tuple[float, bool, float, bool]:
    """ "(0, inf)" -> (low, low included, high, high included)."""
    match = _BOUNDS.match(text)
    if match is None:
        raise ValueError(f"bounds {text!r} are not an interval like '(0, inf)' or '[1, 10]'")
    left, low, high, right = match.groups()
    return float(low), left == "[", float(high), right == "]"


def _within(value: Any, interval: tuple[float, bool, float, bool]) -> bool:
    low, low_in, high, high_in = interval
    return ((value > low or (low_in and value == low))
            and (value < high or (high_in and value == high)))


def _bounds_message(bounds: str) -> str:
    """ "(0, inf)" -> "be > 0", "[1, inf)" -> "be >= 1", anything else -> "lie in (0, 1)"."""
    low, low_in, high, _ = _parse_bounds(bounds)
    if math.isinf(high):
        return f"be {'>=' if low_in else '>'} {low:g}"
    return f"lie in {bounds}"


def _coerce(name: str, default: Any, value: Any, owner: str) -> Any:
    """Check a user value against the default's type; ints are accepted where floats are."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{owner}: hyperparameter {name!r} must be true/false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{owner}: hyperparameter {name!r} must be finite, got {value!r}")
        return float(value)
    if isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    raise ConfigError(
        f"{owner}: hyperparameter {name!r} expects {type(default).__name__}, got {value!r}"
    )


def resolve(
    spec: Mapping[str, HParam], overrides: Mapping[str, Any] | None, owner: str
) -> dict[str, Any]:
    """Defaults of `spec` overridden by `overrides`, each checked against its default's type and
    its choices. Unknown keys and bad values raise a `ConfigError` (a `ValueError`) naming them."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(spec))
    if unknown:
        raise ConfigError(
            f"{owner}: unknown hyperparameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(spec))}"
        )
    out = {k: h.default for k, h in spec.items()}
    for k, v in overrides.items():
        out[k] = _coerce(k, spec[k].default, v, owner)
        choices, bounds = spec[k].choices, spec[k].bounds
        if choices is not None and out[k] not in choices:
            raise ConfigError(f"{owner}: hyperparameter {k} {v!r} is not one of: "
                              f"{', '.join(map(str, choices))}")
        if bounds is not None and out[k] is not None and not _within(out[k], _parse_bounds(bounds)):
            raise ConfigError(f"{owner}: hyperparameter {k!r} must {_bounds_message(bounds)}, "
                              f"got {v!r}")
    return out


def sample(spec: Mapping[str, HParam], seed: int, owner: str) -> dict[str, Any]:
    """Random hyperparameters for a sweep; seed 0 gives the defaults (DomainBed convention).

    Each value is drawn from its own `random.Random(seed_hash(seed, owner, name))`: a draw
    depends only on (draw seed, owner, hyperparameter name), so adding or removing a
    hyperparameter, or another algorithm, changes no other value."""
    if seed == 0:
        return {k: h.default for k, h in spec.items()}
    return {k: h.sample(random.Random(seed_hash(seed, owner, k))) for k, h in spec.items()}


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
