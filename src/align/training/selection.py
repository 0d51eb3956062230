"""Model selection over the evaluation records of one run (pure functions of `results.jsonl`).

A criterion scores one evaluation record from the training domains' validation splits; the
selected record is the best score over the run, ties going to the earlier step (DomainBed and DRE
keep the first optimum). A record that lacks what a criterion needs (e.g. a record written before
the loop logged cross-entropies) has no score and is skipped; a criterion that scores no record
selects nothing and is left out of the summary.

| criterion                    | score                                                   | better |
|------------------------------|---------------------------------------------------------|--------|
| `training_domain_validation` | mean accuracy of the validation splits (DomainBed)      | higher |
| `val_loss`                   | size-weighted mean cross-entropy over those splits: their total CE over their total count (DRE's `dre/train.py` keeps the lowest) | lower |
| `last`                       | the record's step (the last record wins)                | higher |

The methods are registered in `SELECTION_METHODS`; any of them can be the config's `selection`,
the one whose checkpoint `checkpoints/best.pt` holds.

Across a sweep's hyperparameter draws (`align collect`), a `SweepSelection` (registered in
`SWEEP_SELECTIONS`) picks one checkpoint per draw with one of the criteria above, then the draw
whose checkpoint ranks best under another (DomainBed's `model_selection.py`; `select_draw`, the
one rule for all of them):

| sweep selection              | checkpoint of each draw      | draws ranked by                                  |
|------------------------------|------------------------------|--------------------------------------------------|
| `training_domain_validation` | `training_domain_validation` | that mean validation accuracy (DomainBed)        |
| `oracle`                     | `last`                       | mean accuracy of the *test* domains' validation splits (DomainBed's test-domain validation) |
| `last`                       | `last`                       | the training domains' mean validation accuracy   |
| `val_loss`                   | `val_loss`                   | that validation cross-entropy (DRE)              |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from ..registry import Registry
from ..protocols import PROTOCOLS


def _mean(record: dict, keys: Sequence[str]) -> float:
    return sum(record["acc"][k] for k in keys) / len(keys)


def val_accuracy(record: dict, val_keys: Sequence[str]) -> float | None:
    """Mean accuracy over the validation splits (each split counts once, whatever its size)."""
    return _mean(record, val_keys)


def val_loss(record: dict, val_keys: Sequence[str]) -> float | None:
    """Size-weighted mean cross-entropy over the validation splits, or None if not recorded.

    DRE (`dre/train.py`) weights each domain's validation loss by its share of the validation
    samples; with per-split means `ce[k]` over `n[k]` samples that is sum(ce * n) / sum(n).
    (DRE's own per-domain value is a sum of batch means divided by the split size, i.e. this mean
    divided by the batch size, except that a last, smaller batch weighs each of its samples more;
    the scale does not move the minimum.)
    """
    ce, n = record.get("ce"), record.get("n")
    if not ce or not n or any(k not in ce or k not in n for k in val_keys):
        return None
    total = sum(n[k] for k in val_keys)
    return sum(ce[k] * n[k] for k in val_keys) / total if total else None


@dataclass(frozen=True)
class Criterion:
    """A selection method: a score per record and its direction.

    Args:
        name: the registry key (`selection:` in a config, the summary's entry).
        score: (record, validation keys) -> score, or None when the record lacks what it needs.
        higher_is_better: the direction of `score`.
        help: one line for the CLI and the docs.
    """

    name: str
    score: Callable[[dict, Sequence[str]], float | None]
    higher_is_better: bool
    help: str = ""

    def better(self, new: float, best: float | None) -> bool:
        """Strictly better (ties keep the earlier record)."""
        if best is None:
            return True
        return new > best if self.higher_is_better else new < best

    def select(self, records: list[dict], val_keys: Sequence[str]) -> dict | None:
        """The best-scoring record (the earliest among equals), or None if none has a score."""
        best, best_score = None, None
        for r in records:
            s = self.score(r, val_keys)
            if s is not None and self.better(s, best_score):
                best, best_score = r, s
        return best


#: Every selection method, in the summary's order; the config's `selection` names the one whose
#: checkpoint `checkpoints/best.pt` holds.
SELECTION_METHODS: Registry[Criterion] = Registry("selection method")


def _register(criterion: Criterion) -> None:
    SELECTION_METHODS.register(criterion.name)(criterion)


_register(Criterion("training_domain_validation", val_accuracy, True,
                    "highest mean validation accuracy of the training domains (DomainBed)"))
_register(Criterion("val_loss", val_loss, False,
                    "lowest size-weighted validation cross-entropy (DRE)"))
# Steps only grow, so the highest step is the last record.
_register(Criterion("last", lambda record, val_keys: record["step"], True, "the last checkpoint"))


def summarize(records: list[dict], protocol: dict, objective_start: int = 0) -> dict:
    """Per selection method: the chosen step, validation and test accuracy, every split's accuracy,
    and the validation loss where the records carry it.

    Only checkpoints after the algorithm's warm-up (`step > objective_start`, see
    `Algorithm.objective_start`) are candidates: for ALIGN a checkpoint from before guidance
    started is a DRE model, and reporting it as ALIGN would mislabel it. This departs from
    DomainBed, whose algorithms have no such warm-up of another objective; it is our choice
    (docs/align.md). `objective_start` is recorded beside the selections.
    """
    out: dict = {"objective_start": objective_start}
    eligible = [r for r in records if r["step"] > objective_start]
    for name in SELECTION_METHODS:
        r = SELECTION_METHODS.get(name).select(eligible, protocol["val_keys"])
        if r is None:
            continue
        out[name] = {
            "step": r["step"],
            "val_acc": _mean(r, protocol["val_keys"]),
            "test_acc": _mean(r, protocol["test_keys"]) if protocol["test_keys"] else None,
            "acc": r["acc"],
            "eval": r.get("eval", {}),
        }
        loss = val_loss(r, protocol["val_keys"])
        if loss is not None:
            out[name]["val_loss"] = loss
    return out


# ------------------------------------------------------------------ across hyperparameter draws
def test_domain_keys(protocol: dict) -> list[str]:
    """The test domains' validation splits of a protocol.json, which test-domain validation
    (the oracle) ranks on: each held-out domain's `out` split (`lodo`; `single_source`: every
    target's), each domain's `val` split under `in_distribution`, where the test domains are the
    training domains (so the oracle ranks as training-domain validation does). Every evaluation
    record holds them: the loop evaluates every split of every domain (`ProtocolSpec.splits`)."""
    split = PROTOCOLS.get(protocol["name"]).val_split
    return [f"{d}_{split}" for d in protocol["test_domains"]]


@dataclass(frozen=True)
class SweepSelection:
    """A model selection across checkpoints and hyperparameter draws (see the module docstring).

    Args:
        name: the registry key (`align collect --selection`).
        title: its name in tables.
        checkpoint: the `SELECTION_METHODS` criterion that picks each draw's checkpoint.
        rank: the `SELECTION_METHODS` criterion whose score, on the chosen checkpoints, picks
            the draw.
        on_test_domains: rank on the test domains' validation splits (`test_domain_keys`: the
            oracle), not on the training domains'.
        help: one line for the CLI and the docs.
    """

    name: str
    title: str
    checkpoint: str
    rank: str
    on_test_domains: bool
    help: str


@dataclass(frozen=True)
class Choice:
    """The draw a `SweepSelection` picked: the caller's `key` for it, its chosen evaluation
    record and the record's rank score (what picked it)."""

    key: Any
    record: dict
    score: float


def select_draw(method: SweepSelection, draws: Iterable[tuple[Any, list[dict], int]],
                protocol: dict) -> Choice | None:
    """The draw `method` selects, or None when no draw has a scored record.

    Args:
        draws: (key, evaluation records, objective_start) per draw: runs of one (algorithm,
            test domain(s), trial seed) that differ only in their hyperparameters. As in
            `summarize`, checkpoints of the warm-up (`step <= objective_start`) are no
            candidates.
        protocol: their protocol.json (the same domains and keys for every draw).

    Ties go to the draw given first (the caller's order), as ties between checkpoints go to the
    earlier one.
    """
    checkpoint, rank = SELECTION_METHODS.get(method.checkpoint), SELECTION_METHODS.get(method.rank)
    keys = test_domain_keys(protocol) if method.on_test_domains else protocol["val_keys"]
    best: Choice | None = None
    for key, records, objective_start in draws:
        eligible = [r for r in records if r["step"] > objective_start]
        record = checkpoint.select(eligible, protocol["val_keys"])
        score = None if record is None else rank.score(record, keys)
        if score is not None and (best is None or rank.better(score, best.score)):
            best = Choice(key, record, score)
    return best


#: Every selection across checkpoints and hyperparameter draws (`align collect --selection`).
SWEEP_SELECTIONS: Registry[SweepSelection] = Registry("sweep selection")

for _method in (  # in the order `align collect` writes them
    SweepSelection("training_domain_validation", "training-domain validation",
                   "training_domain_validation", "training_domain_validation", False,
                   "the best mean validation accuracy of the training domains over checkpoints "
                   "and draws: DomainBed's default"),
    SweepSelection("oracle", "test-domain validation (oracle)", "last",
                   "training_domain_validation", True,
                   "the last checkpoint of the draw with the best accuracy on the test domains' "
                   "validation splits: DomainBed's oracle"),
    SweepSelection("val_loss", "validation loss (DRE)", "val_loss", "val_loss", False,
                   "the lowest validation cross-entropy of the training domains over "
                   "checkpoints and draws: DRE's"),
    SweepSelection("last", "last checkpoint", "last", "training_domain_validation", False,
                   "the last checkpoint of the draw with the best training-domain validation "
                   "accuracy there"),
):
    SWEEP_SELECTIONS.register(_method.name)(_method)
del _method
