"""Per-domain in/out splits with DomainBed's semantics, and their record in ``splits.json``.

DomainBed shuffles each environment with a seeded `RandomState` and holds out the first
``int(n * holdout_fraction)`` shuffled samples ("out", used for model selection); the rest are "in".
We do the same, seeding each domain by ``seed_hash(seed, domain_name)`` so that selecting a subset
of domains does not change any domain's split.

The record stores relative image paths, not indices, so a resumed or re-evaluated run can check
that it sees the same images it was split on.
"""

from __future__ import annotations

import numpy as np

from align.data.folder import DataError, DomainFolder
from align.seeding import seed_hash


def split_indices(n: int, holdout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(n)`` into (in, out), both sorted.

    ``out`` is the first ``int(n * holdout_fraction)`` entries of
    ``RandomState(seed).permutation(n)``. With ``n == 1`` the single sample goes to ``in`` and
    ``out`` is empty; for ``n >= 2`` a positive fraction that rounds down to no sample is an error,
    as is an empty ``in`` (``n == 0``).

    Raises:
        DataError: empty ``in``, or an empty ``out`` despite ``holdout_fraction > 0`` and n >= 2.
        ValueError: ``holdout_fraction`` outside [0, 1) or negative ``n``.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    n_out = int(n * holdout_fraction)
    if n == 0:
        raise DataError("cannot split 0 samples: the 'in' split would be empty")
    if n >= 2 and holdout_fraction > 0 and n_out == 0:
        raise DataError(
            f"holdout_fraction {holdout_fraction} of {n} samples holds out none; "
            "the 'out' split would be empty"
        )
    perm = np.random.RandomState(seed % 2**32).permutation(n)
    return sorted(perm[n_out:].tolist()), sorted(perm[:n_out].tolist())


def make_splits(
    folder: DomainFolder, holdout_fraction: float, seed: int
) -> dict[str, dict[str, list[int]]]:
    """{domain name: {"in": [global sample indices], "out": [...]}} for every domain of `folder`."""
    splits: dict[str, dict[str, list[int]]] = {}
    for d, name in enumerate(folder.domains):
        members = folder.domain_indices(d)
        try:
            in_, out = split_indices(len(members), holdout_fraction, seed_hash(seed, name))
        except DataError as e:
            raise DataError(f"domain {name!r}: {e}") from None
        splits[name] = {"in": [members[i] for i in in_], "out": [members[i] for i in out]}
    return splits


def splits_record(
    folder: DomainFolder, splits: dict[str, dict[str, list[int]]]
) -> dict[str, dict[str, list[str]]]:
    """{domain: {split: [relative image paths]}}, JSON-ready, for ``splits.json``."""
    return {
        domain: {key: [folder.samples[i].path for i in idx] for key, idx in parts.items()}
        for domain, parts in splits.items()
    }


def splits_from_record(
    folder: DomainFolder, record: dict[str, dict[str, list[str]]], *, source: str = "splits record"
) -> dict[str, dict[str, list[int]]]:
    """Indices for a record written by `splits_record`, checked against the current folder.

    Every recorded path must still be an image of the folder, every domain of the folder must
    be recorded, and every image of a recorded domain must lie in exactly one split: a folder that
    gained, lost or moved images cannot silently reuse an old split.

    Raises:
        DataError: naming `source`, the domain and the first offending image paths.
    """
    if not isinstance(record, dict):
        kind = type(record).__name__
        raise DataError(f"{source}: expected a mapping of domain -> splits, got {kind}")
    unknown = sorted(set(record) - set(folder.domains))
    missing = sorted(set(folder.domains) - set(record))
    if unknown or missing:
        raise DataError(
            f"{source}: recorded domains {sorted(record)} do not match the folder's "
            f"{folder.domains} (unknown {unknown}, unrecorded {missing})"
        )
    where = {s.path: i for i, s in enumerate(folder.samples)}
    splits: dict[str, dict[str, list[int]]] = {}
    for d, name in enumerate(folder.domains):
        splits[name] = _restore_domain(folder, d, record[name], where, f"{source}, domain {name!r}")
    return splits


def _restore_domain(folder: DomainFolder, d: int, parts: dict, where: dict[str, int],
                    context: str) -> dict[str, list[int]]:
    if not isinstance(parts, dict):
        raise DataError(f"{context}: expected a mapping of split name -> paths")
    out: dict[str, list[int]] = {}
    seen: set[int] = set()
    for key, paths in parts.items():
        gone = [p for p in paths if p not in where]
        if gone:
            raise DataError(
                f"{context}: {len(gone)} recorded image(s) no longer in {folder.root}, "
                f"e.g. {[str(folder.root / p) for p in gone[:5]]}; the dataset changed"
            )
        idx = [where[p] for p in paths]
        foreign = [folder.samples[i].path for i in idx if folder.samples[i].domain != d]
        if foreign:
            raise DataError(f"{context}: image(s) of another domain recorded here: {foreign[:5]}")
        dup = seen.intersection(idx)
        if dup or len(set(idx)) != len(idx):
            raise DataError(f"{context}: an image is recorded twice, e.g. split {key!r}")
        seen.update(idx)
        out[key] = idx
    new = [folder.samples[i].path for i in folder.domain_indices(d) if i not in seen]
    if new:
        raise DataError(
            f"{context}: {len(new)} image(s) of the folder are in no recorded split, "
            f"e.g. {[str(folder.root / p) for p in new[:5]]}; the dataset changed"
        )
    return out
