"""Evaluation protocols: which domains train, which split selects the model, which split tests.

Accuracy keys are `"<domain>_<split>"`. Splits per domain are DomainBed's `in` (80%) and `out`
(20%); the in-distribution protocol additionally carves a validation split `val` out of `in` so
that the model is not selected on its own test split (our choice; the paper does not say).

| protocol         | trains on              | selects on (training-domain validation) | tests on           |
|------------------|------------------------|-----------------------------------------|--------------------|
| lodo             | `in` of other domains  | `out` of training domains               | `in` of held-out   |
| single_source    | `in` of one domain     | `out` of that domain                    | `in` of the others |
| in_distribution  | `train` (in minus val) | `val` of every domain                   | `out` of each      |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    domains: tuple[str, ...]  # all domains of the run, in dataset order
    train_domains: tuple[str, ...]
    test_domains: tuple[str, ...]

    @property
    def train_split(self) -> str:
        return "train" if self.name == "in_distribution" else "in"

    @property
    def val_split(self) -> str:
        return "val" if self.name == "in_distribution" else "out"

    @property
    def test_split(self) -> str:
        return "out" if self.name == "in_distribution" else "in"

    def val_keys(self) -> list[str]:
        """Accuracy keys averaged by training-domain validation."""
        return [f"{d}_{self.val_split}" for d in self.train_domains]

    def test_keys(self) -> list[str]:
        return [f"{d}_{self.test_split}" for d in self.test_domains]

    def eval_splits(self) -> list[tuple[str, str]]:
        """Every (domain, split) evaluated at each evaluation step."""
        splits = ("train", "val", "out") if self.name == "in_distribution" else ("in", "out")
        return [(d, s) for d in self.domains for s in splits]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "train_domains": list(self.train_domains),
            "test_domains": list(self.test_domains),
            "train_split": self.train_split,
            "val_keys": self.val_keys(),
            "test_keys": self.test_keys(),
        }


def _check_names(kind: str, names: list[str], domains: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in domains]
    if unknown:
        raise ValueError(
            f"{kind}: unknown domain(s) {', '.join(unknown)}; the data has: {', '.join(domains)}"
        )


def make_protocol(
    name: str, domains: list[str], test_domains: list[str], train_domains: list[str]
) -> Protocol:
    """Resolve a protocol against the data's domains, with errors that name the bad domain."""
    doms = tuple(domains)
    if name == "lodo":
        _check_names("--test-domains", test_domains, doms)
        train = tuple(d for d in doms if d not in test_domains)
        if not train:
            raise ValueError("--test-domains: every domain is held out; nothing left to train on")
        return Protocol(name, doms, train, tuple(d for d in doms if d in test_domains))
    if name == "single_source":
        _check_names("--train-domains", train_domains, doms)
        if len(train_domains) != 1:
            raise ValueError("single_source needs exactly one --train-domains")
        return Protocol(name, doms, tuple(train_domains), tuple(d for d in doms if d not in train_domains))
    if name == "in_distribution":
        if test_domains or train_domains:
            raise ValueError("in_distribution trains and tests on every domain; drop --test-domains/--train-domains")
        return Protocol(name, doms, doms, doms)
    raise ValueError(f"unknown protocol {name!r}")
