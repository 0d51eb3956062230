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
| `last`                       | the last record                                         | -      |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


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
    """A selection criterion: a score per record and its direction."""

    name: str
    score: Callable[[dict, Sequence[str]], float | None]
    higher_is_better: bool

    def better(self, new: float, best: float | None) -> bool:
        """Strictly better (ties keep the earlier record)."""
        if best is None:
            return True
        return new > best if self.higher_is_better else new < best

    def select(self, records: list[dict], val_keys: Sequence[str]) -> dict | None:
        best, best_score = None, None
        for r in records:
            s = self.score(r, val_keys)
            if s is not None and self.better(s, best_score):
                best, best_score = r, s
        return best


#: Criteria that can decide which checkpoint `checkpoints/best.pt` holds (config `selection`).
CRITERIA: dict[str, Criterion] = {
    "training_domain_validation": Criterion("training_domain_validation", val_accuracy, True),
    "val_loss": Criterion("val_loss", val_loss, False),
}


def training_domain_validation(records: list[dict], val_keys: Sequence[str]) -> dict | None:
    """The record with the best mean accuracy on the training domains' validation splits."""
    return CRITERIA["training_domain_validation"].select(records, val_keys)


def lowest_val_loss(records: list[dict], val_keys: Sequence[str]) -> dict | None:
    """The record with the lowest size-weighted validation cross-entropy (None if none has it)."""
    return CRITERIA["val_loss"].select(records, val_keys)


def last_checkpoint(records: list[dict], val_keys: Sequence[str] = ()) -> dict | None:
    return records[-1] if records else None


SELECTION_METHODS = {
    "training_domain_validation": training_domain_validation,
    "val_loss": lowest_val_loss,
    "last": last_checkpoint,
}


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
    for name, select in SELECTION_METHODS.items():
        r = select(eligible, protocol["val_keys"])
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
