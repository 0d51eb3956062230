"""Read run directories and group them into settings and methods (pure; nothing is written).

A **setting** is one table's worth of comparable runs: the same protocol on the same domains of
one dataset folder. A **method** is one row: the runs of one algorithm with the same
configuration apart from the seed and the held-out / source domains. Its label is the
algorithm's name, plus, when variants of one algorithm differ in their hyperparameters (or
training config), the differing values, e.g. `align (guidance=none)`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..protocols import PROTOCOLS
from ..rundir import DEFAULT_SELECTION, RunDirError, RunFiles, selection_of

#: Config keys that do not make another method: the seed, the domain assignment (a column of the
#: table), paths and machine settings. Every other key (hparams included) does; `masks` only for
#: an algorithm that learns from them (`RunRecord.variant`).
NOT_VARIANT = {
    "out", "seed", "test_domains", "train_domains", "protocol", "data", "domains", "dataset",
    "device", "num_workers", "eval_batch_size", "verify_images", "skip_bad_images", "preset",
    "tensorboard", "channels_last",  # how it ran, not what was trained
}

class RunIdentity:
    """What a run's config.json and protocol.json say it ran (for classes with those two)."""

    config: dict
    protocol: dict

    @property
    def algorithm(self) -> str:
        return self.config["algorithm"]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def domains(self) -> tuple[str, ...]:
        """Every domain of the run, sorted."""
        p = self.protocol
        return tuple(sorted(set(p["train_domains"]) | set(p["test_domains"])))


def _learns_from_masks(config: dict) -> bool:
    """Whether a run (its config.json) trained on its masks; True when that cannot be told (an
    algorithm or hyperparameters this version does not know)."""
    from ..algorithms import ALGORITHMS

    if config.get("algorithm") not in ALGORITHMS.names():
        return True
    try:
        return ALGORITHMS.get(config["algorithm"]).needs_masks(config.get("hparams"))
    except ValueError:
        return True


@dataclass
class RunRecord(RunIdentity):
    """What the report reads from one run directory (`evaluation`: its evaluation.json)."""

    path: Path
    config: dict
    protocol: dict
    summary: dict
    results: list[dict]
    evaluation: dict | None

    @property
    def selection(self) -> str:
        """The run's selection criterion: the one its best.pt (hence evaluation.json) follows."""
        return selection_of(self.config)

    @property
    def selected(self) -> dict:
        """summary.json's entry for the run's own selection criterion."""
        return self.summary[self.selection]

    def variant(self) -> dict:
        """Flattened config that identifies the method (hparams by their own names)."""
        out = {k: v for k, v in self.config.items() if k not in NOT_VARIANT and k != "hparams"}
        out.setdefault("selection", DEFAULT_SELECTION)
        out.setdefault("precision", "fp32")  # runs from before the key trained in fp32
        if not _learns_from_masks(self.config):
            # Its masks only fed evaluation: an ERM run with --masks is the same method as one
            # without (for GRADIA, ground-truth and SAM masks are two methods).
            out.pop("masks", None)
        out.update(self.config.get("hparams", {}))
        return out

    def name(self) -> str:
        """Short description for legends: seed and held-out (or source) domains."""
        p = self.protocol
        named = PROTOCOLS.get(p["name"]).named  # which domains the user chose, if any
        if named is None:
            return f"seed {self.seed}"
        word = "test" if named == "test_domains" else "source"
        return f"seed {self.seed}, {word} {'+'.join(p[named])}"


@dataclass
class Method:
    label: str
    algorithm: str
    runs: list[RunRecord]

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})


@dataclass
class Setting:
    protocol: str
    domains: tuple[str, ...]
    methods: list[Method] = field(default_factory=list)
    #: The runs' dataset folder (config `data`) when the report spans several, else "".
    dataset: str = ""

    @property
    def title(self) -> str:
        where = f"{self.dataset}, " if self.dataset else ""
        return f"{where}{self.protocol}: {', '.join(self.domains)}"

    @property
    def slug(self) -> str:
        parts = (self.dataset, self.protocol, *self.domains) if self.dataset else (
            self.protocol, *self.domains)
        return "-".join(parts).replace(" ", "_").replace("/", "_")


def load_run_record(path: str | Path, evaluated: bool = True) -> RunRecord:
    """Read one finished run directory; `RunDirError` naming it when a file is missing or bad.

    `evaluated`: the run must have been evaluated (else the message gives the `align evaluate`
    command); with False, a run without evaluation.json has `evaluation` None."""
    run = RunFiles(path)
    if not run.path.is_dir():
        raise RunDirError(f"{run.path}: not a directory")
    config, protocol, summary = run.config(), run.protocol(), run.summary()
    # A run trained further (more --steps) and stopped keeps the summary.json of its earlier,
    # shorter training: reporting it would show a run that no longer is.
    if not run.is_finished():
        raise RunDirError(
            f"{run.path}: training has not finished (no `done` marker; its summary.json may "
            "be from an earlier, shorter training); run the same `align train` command again "
            "to finish it")
    selection = selection_of(config)
    if selection not in summary:
        raise RunDirError(
            f"{run.path}/summary.json has no {selection!r} entry (the run's selection)")
    evaluation = run.evaluation() if evaluated or run.has_evaluation() else None
    # An evaluation of a checkpoint that training has since replaced (the run trained further)
    # would put one checkpoint's explanation metrics beside another's accuracies.
    scored = (evaluation or {}).get("config", {})
    checkpoint = scored.get("checkpoint", "best")
    now = summary.get(selection if checkpoint == "best" else checkpoint, {}).get("step")
    if evaluation is not None and scored.get("step") != now:
        if evaluated:
            raise RunDirError(
                f"{run.path}: its evaluation.json scored the {checkpoint} checkpoint of step "
                f"{scored.get('step')}, but that checkpoint is now step {now} (trained further "
                f"since?): run `align evaluate {run.path}` again")
        evaluation = None  # a folder of runs: reported as not evaluated, accuracies only
    return RunRecord(run.path, config, protocol, summary, run.records(), evaluation)


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run directories: each path itself if it holds a config.json, else every run below it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.json").is_file():
            out.append(p)
            continue
        found = sorted(c.parent for c in p.rglob("config.json")) if p.is_dir() else []
        if not found:
            raise RunDirError(f"{p}: not a run directory and no run directory below it")
        out += found
    return list(dict.fromkeys(out))


def algorithm_order(name: str) -> tuple[int, str]:
    """Sort key: the algorithms' registry order (unknown names last, by name)."""
    from ..algorithms import ALGORITHMS

    names = ALGORITHMS.names()
    return (names.index(name) if name in names else len(names), name)


def format_value(v) -> str:
    """A config or hyperparameter value as labels show it: a float short (`5e-05`, 6
    significant digits), a list or dict as compact JSON."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def variant_key(variant: dict) -> str:
    """A variant's grouping key (its JSON, keys sorted)."""
    return json.dumps(variant, sort_keys=True, default=str)


def variant_labels(algorithm: str, variants: dict[str, dict]) -> dict[str, str]:
    """Labels of one algorithm's variants (key -> flattened config): the algorithm's name, plus
    the values of the keys in which its variants differ, e.g. `align (guidance=none)`."""
    differing = sorted({k for a in variants.values() for b in variants.values()
                        for k in set(a) | set(b) if a.get(k) != b.get(k)})
    out = {}
    for key, v in variants.items():
        suffix = ", ".join(f"{k}={format_value(v.get(k))}" for k in differing)
        out[key] = f"{algorithm} ({suffix})" if suffix else algorithm
    return out


def group_methods(runs: list[RunRecord]) -> list[Method]:
    """Runs -> methods, labelled as in the module docstring, in registry order of algorithms."""
    by_algo: dict[str, dict[str, list[RunRecord]]] = {}
    variants: dict[str, dict[str, dict]] = {}
    for r in runs:
        v = r.variant()
        key = variant_key(v)
        by_algo.setdefault(r.algorithm, {}).setdefault(key, []).append(r)
        variants.setdefault(r.algorithm, {})[key] = v
    methods = []
    for algo in sorted(by_algo, key=algorithm_order):
        labels = variant_labels(algo, variants[algo])
        for key, members in by_algo[algo].items():
            members = sorted(members, key=lambda r: (r.seed, r.name(), str(r.path)))
            methods.append(Method(labels[key], algo, members))
    return sorted(methods, key=lambda m: (algorithm_order(m.algorithm), m.label))


def dataset_of(run: RunIdentity) -> str:
    """The dataset folder a run trained on, as its config names it (normalised: `data/x/` and
    `data/x` are one folder; a relative and an absolute path to it are two)."""
    return os.path.normpath(run.config["data"])


def group_settings(runs: list[RunRecord]) -> list[Setting]:
    """Runs -> settings (dataset, protocol, domains), each with its methods.

    Runs on different dataset folders never share a table, even when their domains have the same
    names (the synthetic regimes' do): they would be averaged as seeds of one method. The folder
    is named in the titles only when the runs span several."""
    by_setting: dict[tuple[str, str, tuple[str, ...]], list[RunRecord]] = {}
    for r in runs:
        by_setting.setdefault((dataset_of(r), r.protocol["name"], r.domains), []).append(r)
    named = len({ds for ds, _, _ in by_setting}) > 1
    return [Setting(p, d, group_methods(rs), ds if named else "")
            for (ds, p, d), rs in sorted(by_setting.items())]
