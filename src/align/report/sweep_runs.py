"""A sweep's run directories, read and grouped for `align collect` (pure; nothing is written).

A sweep folder holds run directories anywhere below it (`align sweep`'s layout, a hand-made
tree, copies of several sweeps): a folder with a config.json, read through `RunFiles` (its
config.json, protocol.json, summary.json and results.jsonl; nothing else). What a run ran
identifies it:

| identity           | read from                                                               |
|--------------------|-------------------------------------------------------------------------|
| dataset            | config `dataset` (a preset), else the name of the data folder          |
| protocol, domains  | protocol.json: its name and every domain of the run                     |
| algorithm          | config `algorithm`                                                      |
| settings           | every other config key except paths, machine settings and `selection` (`SWEEP_KEYS`) |
| test env           | what the protocol names: the held-out domain(s) (`lodo`), the source (`single_source`), none (`in_distribution`) |
| trial seed         | config `seed`                                                           |
| draw               | the resolved hyperparameters, config `hparams`; `draw_id` names them    |

Runs with the same dataset, protocol and domains make a **setting** (one set of tables); within
it, runs with the same algorithm and settings make a **method** (a table row); within a method,
the finished runs of one (test env, trial seed) are the draws a selection chooses among. Runs
not finished, unreadable or duplicated are kept aside, and `Sweep.missing` names them with every
(test env, seed) of the setting that a method has no finished draw for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..rundir import RunDirError, RunFiles
from ..protocols import PROTOCOLS
from .collect import (NOT_VARIANT, RunIdentity, algorithm_order, find_run_dirs, variant_key,
                      variant_labels)

#: Config keys that do not make another method of a sweep: the report's (seed, domains, paths,
#: machine settings), the hyperparameters (the draw) and `selection` (`align collect` selects
#: from the records under every method, whatever checkpoint best.pt holds).
SWEEP_KEYS = NOT_VARIANT | {"hparams", "selection"}

Env = tuple[str, ...]


def draw_id(hparams: dict) -> str:
    """A short stable name of a hyperparameter draw: the first 8 hex digits of the SHA-256 of its
    JSON (keys sorted), the same on every machine and for every seed and test env."""
    text = json.dumps(hparams, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def env_label(env: Env) -> str:
    """"A" or "A+B" for held-out / source domains; "all" for a protocol that names none."""
    return "+".join(env) or "all"


@dataclass(frozen=True)
class SweepRun(RunIdentity):
    """One run of a sweep, as `align collect` reads it."""

    path: Path
    config: dict
    protocol: dict
    records: list[dict]  # results.jsonl
    objective_start: int  # summary.json's: no checkpoint of the warm-up is selected
    done: bool  # finished training (`RunFiles.is_finished`)

    @property
    def hparams(self) -> dict:
        return self.config.get("hparams", {})

    @property
    def draw(self) -> str:
        return draw_id(self.hparams)

    @property
    def dataset(self) -> str:
        return self.config.get("dataset") or Path(self.config["data"]).name

    @property
    def env(self) -> Env:
        named = PROTOCOLS.get(self.protocol["name"]).named
        return tuple(self.protocol[named]) if named else ()

    def settings(self) -> dict:
        return {k: v for k, v in self.config.items() if k not in SWEEP_KEYS}


@dataclass
class SweepMethod:
    """One table row: the finished runs of one algorithm and settings, per (test env, seed),
    per draw id; and those not finished (`pending`, the same way)."""

    label: str
    algorithm: str
    runs: dict[tuple[Env, int], dict[str, SweepRun]] = field(default_factory=dict)
    pending: dict[tuple[Env, int], dict[str, SweepRun]] = field(default_factory=dict)

    def n_draws(self) -> int:
        """The most draws any (test env, seed) has, finished or not: what each should have."""
        cells = set(self.runs) | set(self.pending)
        return max((len(self.runs.get(c, {}).keys() | self.pending.get(c, {}).keys())
                    for c in cells), default=0)

    def draws(self) -> dict[str, dict]:
        """Every draw of the method: id -> hyperparameters (sorted by id)."""
        found = {d: r.hparams for cell in self.runs.values() for d, r in cell.items()}
        return dict(sorted(found.items()))


@dataclass
class SweepSetting:
    """One set of tables: a dataset under one protocol on its domains."""

    dataset: str
    protocol: str
    domains: tuple[str, ...]
    methods: list[SweepMethod] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.dataset}, {self.protocol} ({', '.join(self.domains)})"

    @property
    def slug(self) -> str:
        return "-".join((self.dataset, self.protocol, *self.domains)).replace(" ", "_")

    @property
    def named(self) -> str | None:
        """The protocol's named domains ("test_domains", "train_domains", None)."""
        return PROTOCOLS.get(self.protocol).named

    @property
    def env_name(self) -> str:
        """What a test env is called in tables: "test" (held-out domains), "source", "env"."""
        return {"test_domains": "test", "train_domains": "source"}.get(self.named or "", "env")

    def where(self, method: str, env: Env, seed: int) -> str:
        """"<setting>: <method>: test A, seed 0", naming a cell in messages."""
        return f"{self.title}: {method}: {self.env_name} {env_label(env)}, seed {seed}"

    def envs(self) -> list[Env]:
        """Every test env any method ran or started, sorted."""
        return sorted({e for m in self.methods for e, _ in m.runs.keys() | m.pending.keys()})

    def seeds(self) -> list[int]:
        return sorted({s for m in self.methods for _, s in m.runs.keys() | m.pending.keys()})


@dataclass
class Sweep:
    """Everything found below a sweep folder (`read_sweep`)."""

    root: Path
    settings: list[SweepSetting]
    unfinished: list[tuple[Path, str]]  # (run, why: not finished, not started, unreadable)
    duplicates: list[tuple[Path, Path]]  # (run ignored, the same run used instead)

    @property
    def n_finished(self) -> int:
        return sum(len(cell) for s in self.settings for m in s.methods for cell in m.runs.values())

    def relative(self, path: Path) -> str:
        """A run's path relative to the sweep folder (as given when outside it)."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def missing(self) -> list[str]:
        """One line per thing the tables lack, in a stable order: runs not finished or
        unreadable, duplicates ignored, and per setting and method every (test env, seed) of
        the setting (over the runs found, finished or not) without a finished draw or with
        fewer draws finished than another has."""
        lines = [f"{self.relative(p)}: {why}" for p, why in self.unfinished]
        lines += [f"{self.relative(p)}: the same run as {self.relative(q)} (ignored)"
                  for p, q in self.duplicates]
        for s in self.settings:
            for m in s.methods:
                most = m.n_draws()
                for env in s.envs():
                    for seed in s.seeds():
                        where = s.where(m.label, env, seed)
                        n = len(m.runs.get((env, seed), {}))
                        if n == 0:
                            lines.append(f"{where}: no finished run")
                        elif n < most:
                            lines.append(f"{where}: {n} of {most} draws finished")
        return lines


def _read(path: Path) -> tuple[SweepRun | None, str]:
    """The run (finished or not), or None when it cannot be placed; and why it is not finished
    ("" when it is)."""
    run = RunFiles(path)
    try:
        config = run.config()
        if not (run / "protocol.json").is_file():
            return None, "not started (no protocol.json)"
        records = run.records()
        done = run.is_finished()
        start = run.summary().get("objective_start", 0) if done else 0
        why = "" if done else (f"not finished (step {records[-1]['step'] if records else 0} "
                               f"of {config.get('steps', '?')})")
        found = SweepRun(run.path, config, run.protocol(), records, start, done)
        # What places the run in the tables, read now: a config.json and protocol.json that are
        # not align's (another tool's folder below the sweep) are unreadable, not a crash.
        found.dataset, found.env, found.domains, found.algorithm, found.seed, found.settings()
        return found, why
    except RunDirError as e:
        return None, f"unreadable ({e})"
    except (KeyError, TypeError, AttributeError) as e:
        return None, (f"unreadable (its config.json or protocol.json is not an align run's: "
                      f"{type(e).__name__} {e})")


def read_sweep(folder: str | Path) -> Sweep:
    """Read every run directory below `folder` (or `folder` itself) and group them (see the
    module docstring); settings sorted, methods in the algorithms' registry order.

    Raises:
        RunDirError: no run directory below `folder`.
    """
    root = Path(folder)
    unfinished: list[tuple[Path, str]] = []
    duplicates: list[tuple[Path, Path]] = []
    # setting -> algorithm -> settings key -> finished? -> (test env, seed) -> draw -> run
    tree: dict[tuple, dict[str, dict[str, dict]]] = {}
    variants: dict[tuple, dict[str, dict[str, dict]]] = {}
    for path in find_run_dirs([root]):
        run, why = _read(path)
        if why:
            unfinished.append((path, why))
        if run is None:
            continue
        setting = (run.dataset, run.protocol["name"], run.domains)
        key = variant_key(run.settings())
        variants.setdefault(setting, {}).setdefault(run.algorithm, {})[key] = run.settings()
        cell = (tree.setdefault(setting, {}).setdefault(run.algorithm, {}).setdefault(key, {})
                .setdefault(run.done, {}).setdefault((run.env, run.seed), {}))
        if run.draw in cell:  # find_run_dirs is sorted: the first path is kept
            duplicates.append((run.path, cell[run.draw].path))
        else:
            cell[run.draw] = run
    settings = []
    for (dataset, protocol, domains), algos in sorted(tree.items()):
        methods = []
        for algo in sorted(algos, key=algorithm_order):
            labels = variant_labels(algo, variants[(dataset, protocol, domains)][algo])
            methods += [SweepMethod(labels[k], algo, dict(sorted(runs.get(True, {}).items())),
                                    dict(sorted(runs.get(False, {}).items())))
                        for k, runs in algos[algo].items()]
        methods.sort(key=lambda m: (algorithm_order(m.algorithm), m.label))
        settings.append(SweepSetting(dataset, protocol, domains, methods))
    return Sweep(root, settings, unfinished, duplicates)
