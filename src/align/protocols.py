"""Evaluation protocols: which domains train, which split selects the model, which split tests.

Accuracy keys are `"<domain>_<split>"`. Splits per domain are DomainBed's `in` (80%) and `out`
(20%); the in-distribution protocol additionally carves a validation split `val` out of `in` so
that the model is not selected on its own test split (our choice; the paper does not say).

| protocol         | trains on              | selects on (training-domain validation) | tests on           |
|------------------|------------------------|-----------------------------------------|--------------------|
| lodo             | `in` of other domains  | `out` of training domains               | `in` of held-out   |
| single_source    | `in` of one domain     | `out` of that domain                    | `in` of the others |
| in_distribution  | `train` (in minus val) | `val` of every domain                   | `out` of each      |

Each protocol is a `ProtocolSpec` registered in `PROTOCOLS`, carrying its split names, the role
of its test splits and which domains the user names; code asks the spec, never compares names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import ConfigError
from .registry import Registry


@dataclass(frozen=True)
class ProtocolSpec:
    """One protocol, before it meets a dataset's domains (`make_protocol` resolves it).

    Args:
        name: the registry key (`protocol:` in a config, `--protocol`).
        help: one line for the CLI and the docs.
        train_split: the split of each training domain that is trained on.
        val_split: the split of each training domain that selects the model.
        test_split: the split of each test domain that is reported.
        splits: every split of every domain evaluated at each evaluation.
        carves_val: `val` is carved out of each domain's `in`, the rest becoming `train`.
        test_role: what the test splits measure, for `align evaluate`: "ood" (domains not
            trained on) or "in_domain".
        named: the config key whose domains the user names: "test_domains" (the others train),
            "train_domains" (the others test), or None (every domain trains and tests).
        n_named: how many domains must be named (None: at least one).
    """

    name: str
    help: str
    train_split: str
    val_split: str
    test_split: str
    splits: tuple[str, ...]
    carves_val: bool
    test_role: str
    named: str | None
    n_named: int | None = None

    def check_domains(self, test_domains: Sequence[str], train_domains: Sequence[str]) -> None:
        """Refuse, naming the key, domain lists this protocol does not take (a list that would be
        silently ignored is refused too) or takes in another number."""
        given = {"test_domains": list(test_domains), "train_domains": list(train_domains)}
        for key, names in given.items():
            if key != self.named and names:
                hint = (f"it names only {self.named!r}" if self.named else
                        "it trains and tests on every domain")
                raise ConfigError(f"protocol {self.name!r} takes no {key!r} ({_flag(key)}), got "
                                  f"{names}: {hint}")
        if self.named is None:
            return
        names = given[self.named]
        # A repeat changes nothing in the run but its config.json, which then refuses to resume
        # under the same domains named once.
        repeated = [n for i, n in enumerate(names) if n in names[:i]]
        if repeated:
            raise ConfigError(f"{self.named!r} ({_flag(self.named)}) names {', '.join(repeated)} "
                              f"twice: {names}")
        if self.n_named is None and not names:
            raise ConfigError(f"protocol {self.name!r} needs {self.named!r} ({_flag(self.named)})")
        if self.n_named is not None and len(names) != self.n_named:
            raise ConfigError(f"protocol {self.name!r} needs exactly {self.n_named} {self.named!r} "
                              f"entry ({_flag(self.named)}), got {names}")

    def roles(self, test_keys: Sequence[str], val_keys: Sequence[str]) -> list[tuple[str, str]]:
        """[(accuracy key, role)] that `align evaluate` scores: the test splits under
        `test_role` and, when they are out-of-distribution, the training domains' validation
        splits as the in-domain reference."""
        out = [(k, self.test_role) for k in test_keys]
        if self.test_role == "ood":
            out += [(k, "in_domain") for k in val_keys]
        return out


PROTOCOLS: Registry[ProtocolSpec] = Registry("protocol")


def _register(spec: ProtocolSpec) -> None:
    PROTOCOLS.register(spec.name)(spec)


_register(ProtocolSpec("lodo", "leave domains out: train on the others, test on them",
                       "in", "out", "in", ("in", "out"), False, "ood", "test_domains"))
_register(ProtocolSpec("single_source", "train on one domain, test on the others",
                       "in", "out", "in", ("in", "out"), False, "ood", "train_domains", 1))
_register(ProtocolSpec("in_distribution", "train and test on every domain, on held-out samples",
                       "train", "val", "out", ("train", "val", "out"), True, "in_domain", None))


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


@dataclass(frozen=True)
class Protocol:
    """A protocol resolved against a dataset: its spec and the domains it trains and tests on."""

    spec: ProtocolSpec
    domains: tuple[str, ...]  # all domains of the run, in dataset order
    train_domains: tuple[str, ...]
    test_domains: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def train_split(self) -> str:
        return self.spec.train_split

    def val_keys(self) -> list[str]:
        """Accuracy keys averaged by training-domain validation."""
        return [f"{d}_{self.spec.val_split}" for d in self.train_domains]

    def test_keys(self) -> list[str]:
        return [f"{d}_{self.spec.test_split}" for d in self.test_domains]

    def eval_splits(self) -> list[tuple[str, str]]:
        """Every (domain, split) evaluated at each evaluation step."""
        return [(d, s) for d in self.domains for s in self.spec.splits]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "train_domains": list(self.train_domains),
            "test_domains": list(self.test_domains),
            "train_split": self.train_split,
            "val_keys": self.val_keys(),
            "test_keys": self.test_keys(),
        }


def make_protocol(
    name: str, domains: list[str], test_domains: list[str], train_domains: list[str]
) -> Protocol:
    """Resolve a protocol against the data's domains, with errors that name the bad domain."""
    spec = PROTOCOLS.get(name)
    spec.check_domains(test_domains, train_domains)
    doms = tuple(domains)
    if spec.named is None:
        return Protocol(spec, doms, doms, doms)
    named = test_domains if spec.named == "test_domains" else train_domains
    unknown = [n for n in named if n not in doms]
    if unknown:
        raise ConfigError(f"{_flag(spec.named)}: unknown domain(s) {', '.join(unknown)}; the data "
                          f"has: {', '.join(doms)}")
    chosen = tuple(d for d in doms if d in named)
    others = tuple(d for d in doms if d not in named)
    if spec.named == "train_domains":
        return Protocol(spec, doms, chosen, others)
    if not others:
        raise ConfigError("--test-domains: every domain is held out; nothing left to train on")
    return Protocol(spec, doms, others, chosen)
