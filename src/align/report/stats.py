"""One aggregation over seeds or runs: the mean and the sample standard deviation.

Rule for a single value: the std is None (undefined), never 0.0. The sample std (n - 1) of one
value is 0/0; writing 0.0 claims that repeating the run would give the same number, which one run
cannot tell. Tables show the mean alone for n = 1 (`format_mean_std`), JSON files hold null.
The standard error of the mean is std / sqrt(n) (None with the std); DomainBed's tables divide
the population std (n) instead, a smaller number for few seeds.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Mapping, NamedTuple, Sequence


class MeanStd(NamedTuple):
    """mean, sample std (None for one value) and the number of values; a tuple, so it unpacks
    as (mean, std, n) and is a JSON list."""

    mean: float
    std: float | None
    n: int


def mean_std(values: Iterable[float]) -> MeanStd:
    """MeanStd of `values` (at least one). Raises ValueError for none: there is no mean."""
    vals = list(values)
    if not vals:
        raise ValueError("mean_std of no values")
    return MeanStd(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None,
                   len(vals))


def format_mean_std(m: MeanStd | None, scale: float = 1.0, decimals: int = 1,
                    missing: str = "-") -> str:
    """"62.5 ± 3.1" (x `scale`), the mean alone for one value, `missing` for None."""
    if m is None:
        return missing
    text = f"{m.mean * scale:.{decimals}f}"
    return text if m.std is None else f"{text} ± {m.std * scale:.{decimals}f}"


def standard_error(m: MeanStd) -> float | None:
    """The standard error of the mean, std / sqrt(n); None for one value (no std)."""
    return None if m.std is None else m.std / math.sqrt(m.n)


def format_mean_se(m: MeanStd | None, scale: float = 1.0, decimals: int = 1,
                   missing: str = "-") -> str:
    """"62.5 ± 1.8 (sd 3.1)": the mean ± its standard error, the std beside it (x `scale`); the
    mean alone for one value, `missing` for None."""
    if m is None:
        return missing
    text = f"{m.mean * scale:.{decimals}f}"
    if m.std is None:
        return text
    return (f"{text} ± {standard_error(m) * scale:.{decimals}f} "
            f"(sd {m.std * scale:.{decimals}f})")


def seed_cells(per_seed: Mapping[int, Mapping[str, float]], columns: Sequence[str],
               avg: bool) -> list[MeanStd | None]:
    """One cell per column over seeds, and with `avg` one more for the average over columns.

    Args:
        per_seed: seed -> column -> that seed's value (a seed may lack columns).
        columns: the columns, in table order.
        avg: append the average column: the mean over `columns` taken per seed (only seeds that
            have every column), then over seeds, so that it has a spread over seeds too.
    """
    seeds = [per_seed[s] for s in sorted(per_seed)]
    cells: list[MeanStd | None] = []
    for col in columns:
        vals = [cols[col] for cols in seeds if col in cols]
        cells.append(mean_std(vals) if vals else None)
    if avg:
        vals = [statistics.fmean(cols[c] for c in columns)
                for cols in seeds if all(c in cols for c in columns)]
        cells.append(mean_std(vals) if vals else None)
    return cells
