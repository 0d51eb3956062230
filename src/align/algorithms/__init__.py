"""Algorithms, one file each, all registered in `ALGORITHMS`.

Importing this package registers every algorithm (the registry drives the CLI's choices and the
parametrised tests).
"""

from .base import ALGORITHMS, Algorithm, Batch
from . import erm  # noqa: F401  (registers)

__all__ = ["ALGORITHMS", "Algorithm", "Batch", "build_algorithm"]


def build_algorithm(name: str, **kwargs) -> Algorithm:
    return ALGORITHMS.get(name)(**kwargs)

from . import dre, align  # noqa: E402,F401  (registers)
from . import sgt, rrr, gradia, haics, res, mixup, groupdro, irm  # noqa: E402,F401  (registers)
