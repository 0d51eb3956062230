"""Stable seeds derived from names: the same in every process, platform and Python version.

Data splits, the training data order and hyperparameter draws are all seeded by `seed_hash` of
what they belong to (e.g. `seed_hash(seed, domain)`), DomainBed's idea: adding a domain or a
hyperparameter shifts no other draw. A low-level module so that the data layer needs nothing above it.
"""

from __future__ import annotations

import hashlib
from typing import Any


def seed_hash(*args: Any) -> int:
    """A stable 31-bit integer hash of its arguments (md5 of their `str`, not Python's `hash`,
    which is salted per process)."""
    text = str(args).encode()
    return int(hashlib.md5(text).hexdigest(), 16) % (2**31)
