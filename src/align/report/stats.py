"""One aggregation over seeds or runs: the mean and the sample standard deviation.

Rule for a single value: the std is None (undefined), never 0.0. The sample std (n - 1) of one
value is 0/0; writing 0.0 claims that repeating the run would give the same number, which one run
cannot tell. Tables show the mean alone for n = 1 (`format_mean_std`), JSON files hold null.
"""

from __future__ import annotations

import statistics
from typing import Iterable, NamedTuple


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
