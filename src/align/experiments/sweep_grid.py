"""A sweep's grid: algorithms x protocol cells x hyperparameter draws x trial seeds, as run configs.

    spec = SweepSpec(algorithms=("erm", "align"), domains=("Caltech101", "LabelMe", "SUN09",
                     "VOC2007"), settings={"data": "/data/VLCS", "dataset": "vlcs", ...},
                     protocols=("lodo",), seeds=(0, 1, 2), n_hparams=4)
    runs = expand(spec, Path("sweeps/vlcs"))   # [GridRun], every config checked; nothing written

The cells of a protocol follow from which domains it names (`ProtocolSpec.named`): lodo gives one
run per held-out domain (`lodo-VOC2007`), single_source one per source (`single_source-LabelMe`),
in_distribution one cell (`in_distribution`); `test_domains` / `train_domains` keep only some.

Hyperparameter draws follow DomainBed's random search. Draw 0 is the base values: the
algorithm's defaults under the training preset's and the config file's `hparams:` (`base`). Draw
h >= 1 re-draws every hyperparameter that declares a search space (`HParam.search`) with
`hparams.sample(spec, h, algorithm)`, i.e. each value from its own `seed_hash(h, algorithm,
name)`, so adding a hyperparameter or an algorithm shifts no other value; a hyperparameter
without a search space keeps its base value. Values set with `--set` (`fixed`) are the same in
every draw. A trial seed is the run's `seed` (its split, data order and initialisation).

A run's directory is `runs/<algorithm>/<cell>/h<draw>/s<seed>-<hash>`: readable, plus 8 hex
digits of a hash of the resolved config (hyperparameters resolved to every value) without the
keys that may change when a run resumes without changing its results (`device`, `num_workers`,
...; `steps` does count). A changed setting therefore makes a new run beside the old one, never a
refused resume, and the same grid launched again finds its runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from ..algorithms import ALGORITHMS
from ..config import TrainConfig, check_run, load_yaml, make_config
from ..errors import ConfigError
from ..hparams import sample
from ..protocols import PROTOCOLS
from ..training.rundir import RESUMABLE_KEYS

#: TrainConfig keys that the grid sets per run; a sweep's shared settings may not hold them
#: (the value names the sweep option that varies them).
PER_RUN_KEYS = {"algorithm": "algorithms", "protocol": "protocols", "seed": "seeds",
                "test_domains": "test_domains (the held-out domains lodo sweeps over)",
                "train_domains": "train_domains (the sources single_source sweeps over)",
                "out": "--out (the sweep folder)"}
#: Keys left out of a run's hash: those a run may resume with changed (`steps` is not one here:
#: a run trained for fewer steps is another run).
UNHASHED_KEYS = frozenset(RESUMABLE_KEYS - {"steps"})


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep varies and what every run shares.

    Args:
        algorithms: names in `ALGORITHMS`.
        domains: the dataset's domains, in dataset order (the cells are drawn from them).
        settings: TrainConfig fields every run shares (data, masks, dataset, steps, backbone,
            ..., and `preset`, a training preset applied under them); no key of
            `PER_RUN_KEYS` and no `hparams` (see `base`).
        protocols: names in `PROTOCOLS`.
        seeds: trial seeds.
        n_hparams: hyperparameter draws per (algorithm, cell, seed), draw 0 the base values.
        base: per algorithm, hyperparameter values of draw 0 (over the preset's).
        fixed: per algorithm, hyperparameter values of every draw (`--set`).
        test_domains: the held-out domains of lodo's cells (empty: every domain).
        train_domains: the sources of single_source's cells (empty: every domain).
    """

    algorithms: tuple[str, ...]
    domains: tuple[str, ...]
    settings: Mapping[str, Any]
    protocols: tuple[str, ...] = ("lodo",)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_hparams: int = 1
    base: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fixed: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    test_domains: tuple[str, ...] = ()
    train_domains: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


class Point(NamedTuple):
    """A run's coordinates in the grid (what a naming function sees)."""

    algorithm: str
    protocol: str
    cell: str  # "lodo-VOC2007", "single_source-LabelMe", "in_distribution"
    domains: tuple[str, ...]  # the domains the cell names (held out or source; none for ID)
    draw: int
    seed: int
    hash: str


def default_name(p: Point) -> str:
    """`runs/<algorithm>/<cell>/h<draw>/s<seed>-<hash>`."""
    return f"runs/{p.algorithm}/{p.cell}/h{p.draw}/s{p.seed}-{p.hash}"


@dataclass(frozen=True)
class GridRun:
    """One run of the grid: its directory (relative to the sweep folder), coordinates, config
    (`out` is the directory under the sweep folder) and resolved hyperparameters."""

    name: str
    point: Point
    config: TrainConfig
    hparams: dict

    def manifest_entry(self) -> dict:
        p = self.point
        return {"dir": self.name, "algorithm": p.algorithm, "protocol": p.protocol,
                "cell": p.cell, "test_domains": self.config.test_domains,
                "train_domains": self.config.train_domains, "hparams_draw": p.draw,
                "seed": p.seed, "hash": p.hash, "hparams": self.hparams}


def parse_assignments(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """`["lr=0.001", "align.fill=blur"]` -> {"lr": 0.001, "align.fill": "blur"} (values read as
    YAML scalars)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = load_yaml(value)
    return out


def scope_hparams(values: Mapping[str, Any], algorithms: list[str] | tuple[str, ...],
                  source: str = "--set", others: bool = False) -> dict[str, dict[str, Any]]:
    """{algorithm: {key: value}} from `KEY: value` (every algorithm of the sweep must have KEY;
    `lr`, `weight_decay` and `dropout` are everyone's) and `ALGORITHM.KEY: value` (that one).
    With `others` (a sweep file's values), a key scoped to an algorithm this sweep does not run
    is left out; otherwise it is refused.

    Each algorithm's values are checked by `Algorithm.resolve_hparams` (types, choices, ranges),
    so a bad value fails here, naming the key and the value, before anything is written."""
    out: dict[str, dict[str, Any]] = {a: {} for a in algorithms}
    for key, value in values.items():
        owner, dot, name = key.rpartition(".")
        targets = [owner] if dot else list(algorithms)
        if dot and owner not in out and others:
            ALGORITHMS.get(owner)  # a typo is still an error
            continue
        if dot and owner not in out:
            raise ConfigError(f"{source} {key}: {owner!r} is not an algorithm of this sweep "
                              f"({', '.join(algorithms)})")
        for a in targets:
            known = ALGORITHMS.get(a).hparam_spec()
            if name not in known:
                raise ConfigError(f"{source} {key}: {a} has no hyperparameter {name}; it has "
                                  f"{', '.join(sorted(known))}" + (
                                      "" if dot else f" (set it for one algorithm with "
                                      f"ALGORITHM.{name}=VALUE)"))
            out[a][name] = value
    for a, hp in out.items():
        ALGORITHMS.get(a).resolve_hparams(hp)
    return out


def draw_hparams(algorithm: str, draw: int) -> dict[str, Any]:
    """The values draw `draw` (>= 1) gives the hyperparameters of `algorithm` that have a
    search space ({} for draw 0: the base values)."""
    if draw == 0:
        return {}
    spec = ALGORITHMS.get(algorithm).hparam_spec()
    drawn = sample(spec, draw, algorithm)
    return {k: v for k, v in drawn.items() if spec[k].search is not None}


def config_hash(config: dict) -> str:
    """8 hex digits of the SHA-256 of a resolved config (a run's config.json), without
    `UNHASHED_KEYS`."""
    kept = {k: v for k, v in config.items() if k not in UNHASHED_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:8]


def cells(spec: SweepSpec, protocol: str) -> list[tuple[str, dict[str, list[str]]]]:
    """[(cell name, {"test_domains": [...], "train_domains": [...]})] of one protocol."""
    named = PROTOCOLS.get(protocol).named
    if named is None:
        return [(protocol, {})]
    chosen = spec.test_domains if named == "test_domains" else spec.train_domains
    return [(f"{protocol}-{d}", {named: [d]}) for d in spec.domains if not chosen or d in chosen]


def check_spec(spec: SweepSpec) -> None:
    """Refuse, naming the option, what no run could use: unknown names, per-run keys among the
    shared settings, domain restrictions no protocol of the sweep takes, an empty grid."""
    for a in spec.algorithms:
        ALGORITHMS.get(a)
    for p in spec.protocols:
        PROTOCOLS.get(p)
    for key, option in PER_RUN_KEYS.items():
        if key in spec.settings:
            raise ConfigError(f"sweep: {key!r} is set per run by the sweep; use {option}")
    if "hparams" in spec.settings:
        raise ConfigError("sweep: shared hyperparameters are the spec's `base` and `fixed`")
    for key in ("test_domains", "train_domains"):
        names = getattr(spec, key)
        unknown = sorted(set(names) - set(spec.domains))
        if unknown:
            raise ConfigError(f"sweep {key}: unknown {key[:-1].replace('_', ' ')}(s) "
                              f"{', '.join(unknown)}; the data has {', '.join(spec.domains)}")
        takers = [p for p in spec.protocols if PROTOCOLS.get(p).named == key]
        if names and not takers:
            raise ConfigError(f"sweep {key}: no protocol of this sweep ({', '.join(spec.protocols)}) "
                              f"names {key}; it would be ignored")
    if not (spec.algorithms and spec.protocols and spec.seeds) or spec.n_hparams < 1:
        raise ConfigError("sweep: the grid is empty (algorithms, protocols, seeds and "
                          "n_hparams >= 1 are needed)")
    # A repeated value would make two runs of one directory (or train one run twice).
    for key in ("algorithms", "protocols", "seeds"):
        values = list(getattr(spec, key))
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise ConfigError(f"sweep {key}: {values} repeats {', '.join(map(str, repeated))}")


def expand(spec: SweepSpec, root: Path, naming: Callable[[Point], str] = default_name
           ) -> list[GridRun]:
    """Every run of the grid, in order algorithm, protocol, cell, draw, seed; each config
    made by `config.make_config` (preset < shared settings < the run's keys) and checked by
    `config.check_run`. Raises a ConfigError naming the first bad key; writes nothing."""
    check_spec(spec)
    settings = dict(spec.settings)
    preset = settings.pop("preset", None)
    runs: list[GridRun] = []
    for a in spec.algorithms:
        for protocol in spec.protocols:
            for cell, named in cells(spec, protocol):
                for draw in range(spec.n_hparams):
                    hparams = {**spec.base.get(a, {}), **draw_hparams(a, draw),
                               **spec.fixed.get(a, {})}
                    for seed in spec.seeds:
                        cfg = make_config(preset=preset, **settings, algorithm=a,
                                          protocol=protocol, seed=seed, hparams=hparams,
                                          out=str(root), **named)
                        check_run(cfg)
                        resolved = ALGORITHMS.get(a).resolve_hparams(cfg.hparams)
                        digest = config_hash({**cfg.to_dict(), "hparams": resolved})
                        point = Point(a, protocol, cell, tuple(next(iter(named.values()), [])),
                                      draw, seed, digest)
                        name = naming(point)
                        runs.append(GridRun(name, point,
                                            dataclasses.replace(cfg, out=str(root / name)),
                                            resolved))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError("sweep: two runs of the grid got the same directory; the naming "
                          "must tell every coordinate apart")
    return runs
