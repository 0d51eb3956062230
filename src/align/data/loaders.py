"""Deterministic, resumable data streams.

Training draws, at every step, `batch_per_domain` samples from each training domain (DomainBed's
one-minibatch-per-environment scheme). Each domain walks through its own seeded permutations epoch
after epoch (no repeats within an epoch, like DomainBed's infinite loader over a RandomSampler), but
the batch of step `s` is computed directly from (seed, domain, s), never from iterator state. So a
run resumed at step k sees exactly the batches an uninterrupted run would have seen from step k on,
with any number of workers. Every drawn sample also carries an augmentation seed from
(seed, step, position), which `ImageDataset` uses to make augmentation reproducible too.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from align.seeding import seed_hash

_U64 = np.uint64
# Salt mixed into the augmentation seeds so they are unrelated to the permutation seeds.
_AUG_SALT = _U64(0x61756773656564)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrap-around arithmetic is intended)."""
    z = z + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def aug_seeds(seed: int, step: int, count: int) -> np.ndarray:
    """int64 [count] augmentation seeds in [0, 2**63) for positions 0..count-1 of `step`."""
    key = np.array([seed % 2**64], dtype=_U64)  # a 1-element array: numpy wraps arrays silently
    key = _splitmix64(_splitmix64(key ^ _AUG_SALT) ^ _U64(step % 2**64))
    return (_splitmix64(key ^ np.arange(count, dtype=_U64)) >> _U64(1)).astype(np.int64)


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for steps start_step, start_step + 1, ..., one batch of ``(global_index, aug_seed)``.

    A batch has ``len(domain_indices) * batch_per_domain`` entries grouped by domain: the first
    `batch_per_domain` come from domain 0, and so on. Domain d's stream is the concatenation of
    permutations of ``domain_indices[d]``, epoch e seeded by ``seed_hash(seed, d, e)``; step s
    takes stream positions ``[s * b, (s + 1) * b)`` (a batch may straddle epochs). Domains are
    identified by their position d in `domain_indices`.

    Args:
        domain_indices: per domain, the dataset indices it may draw (non-empty lists).
        batch_per_domain: samples per domain per step (b).
        seed: stream seed.
        start_step: first step yielded.
        num_steps: how many steps to yield; None for an endless stream.
    """

    def __init__(
        self,
        domain_indices: Sequence[Sequence[int]],
        batch_per_domain: int,
        seed: int,
        start_step: int = 0,
        num_steps: int | None = None,
    ) -> None:
        if not domain_indices:
            raise ValueError("StepBatchSampler needs at least one domain")
        empty = [d for d, ix in enumerate(domain_indices) if len(ix) == 0]
        if empty:
            raise ValueError(f"StepBatchSampler: domain position(s) {empty} have no samples")
        if batch_per_domain < 1:
            raise ValueError(f"batch_per_domain must be >= 1, got {batch_per_domain}")
        if start_step < 0 or (num_steps is not None and num_steps < 0):
            raise ValueError(f"start_step and num_steps must be >= 0: {start_step}, {num_steps}")
        self.pools = [np.asarray(ix, dtype=np.int64) for ix in domain_indices]
        self.batch_per_domain = batch_per_domain
        self.seed = seed
        self.start_step = start_step
        self.num_steps = num_steps
        # Per domain: the few permutations in use (a step touches one epoch, or two at a seam).
        self._perms: list[dict[int, np.ndarray]] = [{} for _ in self.pools]

    def _permutation(self, d: int, epoch: int) -> np.ndarray:
        cache = self._perms[d]
        if epoch not in cache:
            if len(cache) >= 4:
                cache.clear()
            rng = np.random.RandomState(seed_hash(self.seed, d, epoch))
            cache[epoch] = rng.permutation(len(self.pools[d]))
        return cache[epoch]

    def domain_draw(self, d: int, step: int) -> np.ndarray:
        """int64 [batch_per_domain]: the global indices domain `d` contributes at `step`."""
        pool, b = self.pools[d], self.batch_per_domain
        pos = np.arange(step * b, (step + 1) * b, dtype=np.int64)
        epochs, offsets = np.divmod(pos, len(pool))
        out = np.empty(b, dtype=np.int64)
        for e in np.unique(epochs).tolist():
            sel = epochs == e
            out[sel] = pool[self._permutation(d, e)[offsets[sel]]]
        return out

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        """The batch of `step` as (global_index, aug_seed) pairs; a pure function of the config."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        idx = np.concatenate([self.domain_draw(d, step) for d in range(len(self.pools))])
        return list(zip(idx.tolist(), aug_seeds(self.seed, step, len(idx)).tolist()))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while self.num_steps is None or step < self.start_step + self.num_steps:
            yield self.batch_at(step)
            step += 1

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("an endless StepBatchSampler (num_steps=None) has no length")
        return self.num_steps


def make_train_loader(
    dataset: Dataset,
    domain_indices: Sequence[Sequence[int]],
    batch_per_domain: int,
    seed: int,
    start_step: int = 0,
    num_workers: int = 0,
    *,
    num_steps: int | None = None,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
) -> DataLoader:
    """Endless (or `num_steps`-long) loader of domain-balanced batches starting at `start_step`.

    Batches are dicts of stacked tensors (default collate). The loader gets its own generator, so
    creating or iterating it never consumes torch's global random numbers. With workers, each
    keeps `prefetch_factor` batches ready (a batch depends on its step only, so reading ahead
    changes nothing but absorbs slow images) and stays alive between evaluations; `pin_memory`
    puts batches in page-locked memory, for non-blocking copies to a GPU.
    """
    sampler = StepBatchSampler(domain_indices, batch_per_domain, seed, start_step, num_steps)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed % 2**63),
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        pin_memory=pin_memory,
    )


def make_eval_loader(
    dataset: Dataset,
    indices: Sequence[int],
    batch_size: int,
    num_workers: int = 0,
    *,
    pin_memory: bool = False,
) -> DataLoader:
    """Sequential loader over `indices` (in the given order), for deterministic evaluation.

    A fixed private generator keeps evaluation from shifting the global RNG (and so the training
    stream of a run that evaluates between steps).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=list(indices),
        shuffle=False,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
