"""`align sweep`: a grid of runs over any DomainBed-layout dataset, launched on one engine.

    spec = sweep_spec(SweepInputs(out=Path("sweeps/vlcs"), data=Path("/data/VLCS"),
                                  config=Path("configs/vlcs_single_source.yaml")))
    run_sweep(spec, Path("sweeps/vlcs"), launcher="pool", options=LaunchOptions(workers=4))

A sweep folder holds:

    OUT/sweep.json       the manifest: every run of every grid launched here (`write_manifest`)
    OUT/runs/<algorithm>/<cell>/h<draw>/s<seed>-<hash>/   the runs (align.training.rundir)
    OUT/logs/<run>.log   each run's output under `--launcher pool`
    OUT/slurm/           submitit's folder under `--launcher slurm` (one log per run)
    OUT/data/, OUT/pretrained/   the synthetic benchmark and its pretrained stand-in (--synthetic)

A sweep file is a training config file (the keys of `align train --config`, checked by
`align.config`) with one more key, `sweep:`, holding what the sweep varies: `algorithms`,
`protocols`, `seeds`, `n_hparams`, `set` (hyperparameters of every draw, as `--set`),
`test_domains` and `train_domains`. Its `hparams:` are the base values of draw 0 (see
`sweep_grid`); like `--set`, a key may be scoped to one algorithm (`align.fill: blur`).
Precedence: a preset < the file < the command line's flags.

Launched again, a sweep skips its finished runs, resumes interrupted ones, and skips (and
reports) runs that another launcher is training; shared setup (the synthetic data, the
pretrained stand-in, the manifest) is made under locks, so launchers started together never
collide.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from .. import io
from ..algorithms import ALGORITHMS
from ..config import read_config_file
from ..data.presets import get_preset
from ..errors import ConfigError, UserError
from ..rundir import RunFiles
from .settings import QUICKSTART_SETTINGS, quickstart_hparams, synthetic_source
from .sweep_grid import GridRun, Point, SweepSpec, default_name, expand, parse_assignments, \
    scope_hparams
from .sweep_launch import LAUNCHERS, LaunchOptions, Outcome, line

MANIFEST = "sweep.json"
MANIFEST_FORMAT, MANIFEST_VERSION = "align-sweep", 1
#: The `sweep:` section of a sweep file: key -> (expected type, its description).
SWEEP_KEYS = {"algorithms": (list, "a list of algorithm names"),
              "protocols": (list, "a list of protocol names"),
              "seeds": (list, "a list of integer trial seeds"),
              "n_hparams": (int, "an integer >= 1"),
              "set": (dict, "a mapping of hyperparameters to values"),
              "test_domains": (list, "a list of domain names"),
              "train_domains": (list, "a list of domain names")}


class SweepFailed(UserError, RuntimeError):
    """Some runs of a sweep failed (the others finished); the message lists them."""


@dataclass(frozen=True)
class SweepInputs:
    """What `align sweep` was given; None (or empty) means "not given" (the sweep file's value,
    else the default). Data: `data` (with `dataset`, a preset to check it against) or
    `synthetic`, a regime of the built-in benchmark (`align.regimes`)."""

    out: Path
    data: Path | None = None
    dataset: str | None = None
    masks: Path | None = None
    synthetic: str | None = None
    config: Path | None = None
    preset: str | None = None
    algorithms: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    n_hparams: int | None = None
    set: tuple[str, ...] = ()
    test_domains: tuple[str, ...] = ()
    train_domains: tuple[str, ...] = ()
    steps: int | None = None
    device: str | None = None


def read_sweep_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, the `sweep:` section) of a sweep file, both checked for unknown keys
    and the section's value types."""
    values = read_config_file(path, extra=("sweep",))
    section = values.pop("sweep", None) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: 'sweep' must be a mapping")
    for key, value in section.items():
        if key not in SWEEP_KEYS:
            raise ConfigError(f"config file {path}: unknown sweep key {key!r}; known: "
                              f"{', '.join(SWEEP_KEYS)}")
        kind, what = SWEEP_KEYS[key]
        item = int if key == "seeds" else str
        ok = isinstance(value, kind) and not isinstance(value, bool) and (
            all(isinstance(v, item) and not isinstance(v, bool) for v in value) if kind is list
            else key != "n_hparams" or value >= 1)
        if not ok:
            raise ConfigError(f"config file {path}: sweep {key} must be {what}, got {value!r}")
    return values, section


def folder_domains(data: Path, dataset: str | None, subset: list[str] | None) -> tuple[str, ...]:
    """The domain folders of a DomainBed-layout folder (sorted, as the trainer orders them),
    checked against a dataset preset's domains, kept to `subset` (the `domains:` setting)."""
    if not data.is_dir():
        raise ConfigError(f"--data {data}: no such folder")
    found = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if dataset is not None:
        expected = get_preset(dataset).domains
        missing = sorted(set(expected) - set(found))
        if missing:
            raise ConfigError(f"--data {data}: no folder for domain(s) {', '.join(missing)} of "
                              f"--dataset {dataset} (found: {', '.join(found) or 'none'})")
    unknown = sorted(set(subset or []) - set(found))
    if unknown:
        raise ConfigError(f"domains: {', '.join(unknown)} not in {data} ({', '.join(found)})")
    return tuple(d for d in found if not subset or d in subset)


def sweep_spec(inputs: SweepInputs, console: Console | None = None,
               make: bool = True) -> SweepSpec:
    """The grid `inputs` describe. With `--synthetic` and `make`, the benchmark's data and
    pretrained stand-in are made (once, under locks), after every run of the grid passed its
    checks (`expand`); a dry run (`make=False`) makes nothing."""
    console = console or Console()
    train, section = read_sweep_file(inputs.config) if inputs.config else ({}, {})
    flags = {"data": inputs.data and str(inputs.data), "dataset": inputs.dataset,
             "masks": inputs.masks and str(inputs.masks), "steps": inputs.steps,
             "device": inputs.device, "preset": inputs.preset}
    settings = {**train, **{k: v for k, v in flags.items() if v is not None}}
    algorithms = tuple(inputs.algorithms or section.get("algorithms") or ())
    if not algorithms:
        raise ConfigError("sweep: no algorithms (--algorithms, or sweep: algorithms: in --config)")
    base = scope_hparams(settings.pop("hparams", None) or {}, algorithms, "hparams:", others=True)
    from_file = scope_hparams(section.get("set") or {}, algorithms, "sweep set:", others=True)
    flags_set = scope_hparams(parse_assignments(list(inputs.set)), algorithms)

    def synthetic(make: bool) -> dict:
        return synthetic_source(inputs.out, inputs.synthetic, console, settings["backbone"],
                                settings["image_size"], make=make)

    if inputs.synthetic is not None:
        if inputs.data is not None:
            raise ConfigError("--data and --synthetic: choose one dataset")
        settings = {**QUICKSTART_SETTINGS, **settings}
        base = {a: {**quickstart_hparams(a, settings["steps"]), **hp} for a, hp in base.items()}
        domains = tuple(sorted(_synth_domains(inputs.synthetic)))
        source = synthetic(make=False)
    elif settings.get("data"):
        domains = folder_domains(Path(settings["data"]), settings.get("dataset"),
                                 settings.get("domains"))
        source = {}
    else:
        raise ConfigError("sweep: no data (--data DIR, `data:` in --config, or --synthetic)")
    spec = SweepSpec(
        algorithms=algorithms, domains=domains, settings={**settings, **source},
        protocols=tuple(inputs.protocols or section.get("protocols") or ("lodo",)),
        seeds=tuple(inputs.seeds or section.get("seeds") or (0, 1, 2)),
        n_hparams=inputs.n_hparams or section.get("n_hparams") or 1, base=base,
        fixed={a: {**from_file[a], **flags_set[a]} for a in algorithms},
        test_domains=tuple(inputs.test_domains or section.get("test_domains") or ()),
        train_domains=tuple(inputs.train_domains or section.get("train_domains") or ()))
    if make and inputs.synthetic is not None:
        expand(spec, inputs.out)  # every check before the data are made
        spec = dataclasses.replace(spec, settings={**settings, **synthetic(make=True)})
    return spec


def _synth_domains(regime: str) -> tuple[str, ...]:
    from ..regimes import REGIMES

    return REGIMES.get(regime).synth_config.domains


def write_manifest(root: Path, spec: SweepSpec, runs: list[GridRun]) -> Path:
    """Add this grid and its runs to OUT/sweep.json (atomically, under a lock: launchers of
    other grids into the same folder keep theirs)."""
    path = root / MANIFEST
    with io.ProcessLock(root / f".{MANIFEST}.lock", wait=True, remove=True):
        old = read_manifest(root) if path.is_file() else {"grids": [], "runs": []}
        grids = old["grids"] + [g for g in [spec.to_json()] if g not in old["grids"]]
        entries = {e["dir"]: e for e in old["runs"]}
        entries.update({r.name: r.manifest_entry() for r in runs})
        io.write_json(path, {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                             "grids": grids, "runs": list(entries.values())})
    return path


def read_manifest(root: Path) -> dict:
    """OUT/sweep.json, its format checked."""
    manifest = io.read_json(Path(root) / MANIFEST)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
        raise ConfigError(f"{Path(root) / MANIFEST} is not a sweep manifest of this align "
                          f"version ({MANIFEST_FORMAT} {MANIFEST_VERSION})")
    return manifest


def run_status(run: GridRun) -> str:
    """done (finished), resume (a checkpoint to resume from) or new."""
    files = RunFiles(run.config.out)
    return "done" if files.is_done() else "resume" if files.checkpoint("last").is_file() else "new"


def print_grid(runs: list[GridRun], spec: SweepSpec, console: Console) -> None:
    """The dry run's output: one line per run (status, directory, the hyperparameters that
    differ from the algorithm's defaults), then the counts."""
    for run in runs:
        hp = run.hparams
        defaults = ALGORITHMS.get(run.point.algorithm).resolve_hparams({})
        drawn = " ".join(f"{k}={hp[k]:.3g}" if isinstance(hp[k], float) else f"{k}={hp[k]}"
                         for k in sorted(hp) if hp[k] != defaults[k])
        console.print(f"{run_status(run):6} {run.name}  {drawn}", highlight=False, markup=False)
    cells = len({(r.point.protocol, r.point.cell) for r in runs})
    status = Counter(run_status(r) for r in runs)
    console.print(f"{len(runs)} runs = {len(spec.algorithms)} algorithm(s) x {cells} cell(s) x "
                  f"{spec.n_hparams} draw(s) x {len(spec.seeds)} seed(s): "
                  f"{', '.join(f'{n} {s}' for s, n in sorted(status.items()))}; dry run: "
                  "nothing written", highlight=False)


def launch_runs(runs: list[GridRun], root: Path, launcher: str = "local",
                options: LaunchOptions = LaunchOptions(),
                console: Console | None = None) -> list[Outcome]:
    """Launch the runs that are not done; one Outcome per run (`done` for the finished ones).
    Raises SweepFailed after every run had its chance, when some failed."""
    console = console or Console()
    chosen = LAUNCHERS.get(launcher)
    chosen.check(options)
    todo = [r for r in runs if not RunFiles(r.config.out).is_done()]
    console.print(f"{len(runs)} runs: {len(runs) - len(todo)} done, {len(todo)} to run "
                  f"(--launcher {launcher})", highlight=False)
    launched = {o.name: o for o in (chosen.launch(todo, options, root, console) if todo else [])}
    outcomes = [launched.get(r.name, Outcome(r.name, "done")) for r in runs]
    counts = Counter(o.status for o in outcomes)
    console.print("sweep: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
                  highlight=False)
    for o in outcomes:
        if o.status == "locked":
            console.print(line(o, o.name), highlight=False, markup=False)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise SweepFailed(f"{len(failed)} run(s) failed: " + "; ".join(
            f"{o.name}: {o.message}" for o in failed) + " (the others are kept; launch the same "
            "sweep again to retry the failed runs: finished runs are skipped)")
    return outcomes


def run_sweep(spec: SweepSpec, root: Path, launcher: str = "local",
              options: LaunchOptions = LaunchOptions(), console: Console | None = None,
              dry_run: bool = False,
              naming: Callable[[Point], str] = default_name) -> list[Outcome] | None:
    """Expand and check the grid; print it (`dry_run`: nothing is written) or write the
    manifest and launch the runs that are not done."""
    console = console or Console()
    root = Path(root)
    LAUNCHERS.get(launcher).check(options)
    runs = expand(spec, root, naming)
    if dry_run:
        print_grid(runs, spec, console)
        return None
    write_manifest(root, spec, runs)
    return launch_runs(runs, root, launcher, options, console)
