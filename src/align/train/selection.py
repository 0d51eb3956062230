"""Model selection over the evaluation records of one run (pure functions of `results.jsonl`)."""

from __future__ import annotations

from typing import Sequence


def _mean(record: dict, keys: Sequence[str]) -> float:
    return sum(record["acc"][k] for k in keys) / len(keys)


def training_domain_validation(records: list[dict], val_keys: Sequence[str]) -> dict | None:
    """The record with the best mean accuracy on the training domains' validation splits.

    Ties go to the earlier step (DomainBed keeps the first maximum).
    """
    best = None
    for r in records:
        if best is None or _mean(r, val_keys) > _mean(best, val_keys):
            best = r
    return best


def last_checkpoint(records: list[dict], val_keys: Sequence[str] = ()) -> dict | None:
    return records[-1] if records else None


SELECTION_METHODS = {
    "training_domain_validation": training_domain_validation,
    "last": last_checkpoint,
}


def summarize(records: list[dict], protocol: dict, objective_start: int = 0) -> dict:
    """Per selection method: the chosen step, validation and test accuracy, every split's accuracy.

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
    return out
