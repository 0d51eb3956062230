"""Launchers: how a sweep's runs are executed, each on a real engine (no scheduler of our own).

| launcher | engine | where a run's output goes |
|---|---|---|
| local | this process, one run after the other | the terminal |
| pool  | `concurrent.futures.ProcessPoolExecutor` (spawn): N worker processes, one per GPU of `--gpus` (`CUDA_VISIBLE_DEVICES`) or N CPU slots sharing the cores | `OUT/logs/<algorithm>/.../<run>.log` |
| slurm | submitit (`align.experiments.sweep_slurm`): one Slurm job array, one task per run | submitit's folder, `OUT/slurm/` |

Every launcher executes the same picklable `Task` with the same function, `execute`: it trains
the run (`Trainer` resumes an interrupted one exactly) and returns an `Outcome`; a run that
another process holds (`RunLock`) is skipped and reported, not an error. A run's failure is
reported with the others at the end and never stops the rest of the sweep.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console

from ..config import TrainConfig
from ..errors import ConfigError, UserError
from ..registry import Registry
from .sweep_grid import GridRun


@dataclass(frozen=True)
class Task:
    """One run for a launcher: what `execute` needs, picklable.

    Args:
        name: the run's directory relative to the sweep folder (for messages).
        config: its TrainConfig (`out` is the run directory).
        label: the progress line's label ("[3/12] runs/erm/...").
        log: a file that receives the run's output, or None for the caller's console.
        threads: torch's intra-op threads in the process, or None to leave them as they are.
    """

    name: str
    config: TrainConfig
    label: str
    log: str | None = None
    threads: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one run: `trained` (now, to its last step), `locked` (another process
    trains it), `failed` (message says why), `submitted` (queued, not waited for), `queued` (its
    Slurm job of an earlier launch is still queued or running: not submitted again) or `done`
    (finished before this launch; never sent to a launcher)."""

    name: str
    status: str
    message: str = ""
    seconds: float = 0.0


@contextlib.contextmanager
def _output(task: Task, console: Console | None) -> Iterator[Console]:
    """The console a run reports to: its log file (stdout and stderr included) or `console`."""
    if task.log is None:
        yield console or Console()
        return
    Path(task.log).parent.mkdir(parents=True, exist_ok=True)
    with open(task.log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield Console(file=f, width=120, soft_wrap=True)


def execute(task: Task, console: Console | None = None) -> Outcome:
    """Train (or resume, or find finished) one run; never raises for the run's own failure."""
    import torch

    from ..training.loop import Trainer
    from ..training.rundir import RunLocked
    from ..ui import progress_bar

    start = time.time()
    if task.threads:
        torch.set_num_threads(task.threads)
    with _output(task, console) as out:
        try:
            with progress_bar(task.config.steps, task.label, out) as progress:
                Trainer(task.config, progress).run()
        except RunLocked as err:
            return Outcome(task.name, "locked", str(err))
        except Exception as err:  # noqa: BLE001 - reported with the sweep's other outcomes
            # A user error (a loss that diverged, a bad image) is its message, as at the CLI's
            # boundary; anything else is a bug and keeps its traceback.
            out.print(f"error: {err}" if isinstance(err, UserError) else traceback.format_exc(),
                      markup=False, highlight=False)
            return Outcome(task.name, "failed", f"{type(err).__name__}: {err}")
    return Outcome(task.name, "trained", seconds=round(time.time() - start, 1))


@dataclass(frozen=True)
class LaunchOptions:
    """The launchers' options (each launcher takes only some; see `Launcher.options`).

    Args:
        workers: pool: worker processes (default: one per GPU of `gpus`, else 2).
        gpus: pool: GPU ids, one worker each (`CUDA_VISIBLE_DEVICES`).
        partition, time, gpus_per_job, cpus_per_job, mem, account, array_parallelism: slurm:
            the job's partition, wall-clock limit in minutes, GPUs, CPUs (also torch's threads),
            memory in GB, account, and how many tasks of the array run at once.
        cluster: slurm: submitit's cluster, "slurm", or "local" to run the same job array as
            local processes (to try a sweep before submitting it).
        wait: slurm: wait for the jobs and report each run's outcome.
    """

    workers: int | None = None
    gpus: tuple[str, ...] = ()
    partition: str | None = None
    time: int | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    mem: float | None = None
    account: str | None = None
    array_parallelism: int | None = None
    cluster: str = "slurm"
    wait: bool = False

    def given(self) -> list[str]:
        """The options that differ from their defaults."""
        return [f.name for f in fields(self) if getattr(self, f.name) != f.default]


#: launch(runs, options, sweep folder, console) -> one Outcome per run, in the runs' order.
LaunchFn = Callable[[list[GridRun], LaunchOptions, Path, Console], list[Outcome]]


@dataclass(frozen=True)
class Launcher:
    """A registered launcher: its name (`--launcher`), one line of help, the `LaunchOptions` it
    takes (any other given option is refused) and its launch function."""

    name: str
    help: str
    options: tuple[str, ...]
    launch: LaunchFn

    def check(self, options: LaunchOptions) -> None:
        """Refuse an option this launcher would ignore."""
        for name in options.given():
            if name not in self.options:
                owners = [n for n in LAUNCHERS if name in LAUNCHERS.get(n).options]
                raise ConfigError(f"--{name.replace('_', '-')} is an option of --launcher "
                                  f"{' or '.join(owners)}, not of {self.name}")


LAUNCHERS: Registry[Launcher] = Registry("launcher")


def register(name: str, help: str, options: tuple[str, ...] = ()) -> Callable[[LaunchFn], LaunchFn]:
    def deco(fn: LaunchFn) -> LaunchFn:
        LAUNCHERS.register(name)(Launcher(name, help, options, fn))
        return fn
    return deco


def tasks_of(runs: list[GridRun], root: Path, logs: bool = False,
             threads: int | None = None) -> list[Task]:
    """One Task per run, labelled with its position; with `logs`, its output goes to
    OUT/logs/<run directory below runs/>.log."""
    return [Task(r.name, r.config, f"[{i}/{len(runs)}] {r.name}",
                 str(root / "logs" / f"{r.name.removeprefix('runs/')}.log") if logs else None,
                 threads)
            for i, r in enumerate(runs, 1)]


@register("local", "in this process, one run after the other")
def launch_local(runs: list[GridRun], options: LaunchOptions, root: Path,
                 console: Console) -> list[Outcome]:
    return [execute(task, console) for task in tasks_of(runs, root)]


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init_worker(slots, gpus: bool) -> None:
    """A pool worker takes one slot for its life: a GPU id it alone sees (set before CUDA is
    first used in this process), or a CPU slot."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot


@register("pool", "N worker processes on this machine: one per GPU (--gpus) or N CPU slots "
          "(--workers)", ("workers", "gpus"))
def launch_pool(runs: list[GridRun], options: LaunchOptions, root: Path,
                console: Console) -> list[Outcome]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    n = options.workers or len(options.gpus) or 2
    if options.gpus and n != len(options.gpus):
        raise ConfigError(f"--workers {n} with --gpus {','.join(options.gpus)}: the pool runs one "
                          "worker per GPU")
    if n < 1:
        raise ConfigError(f"--workers must be >= 1, got {n}")
    bad = sorted({r.config.device for r in runs} - {"auto", "cuda"}) if options.gpus else []
    if bad:
        raise ConfigError(f"--gpus: each worker sees its one GPU as cuda:0; device {bad[0]!r} "
                          "would not use it (set device: auto or cuda)")
    # CPU slots share the cores; one GPU per worker leaves them the cores too.
    threads = max(1, available_cpus() // n)
    tasks = tasks_of(runs, root, logs=True, threads=threads)
    context = multiprocessing.get_context("spawn")  # no forked torch or CUDA state
    slots = context.Queue()
    for slot in options.gpus or [str(i) for i in range(n)]:
        slots.put(slot)
    console.print(f"pool: {n} workers ({'GPUs ' + ','.join(options.gpus) if options.gpus else 'CPU'}"
                  f", {threads} thread(s) each); each run's output in {root / 'logs'}")
    outcomes: dict[str, Outcome] = {}
    with ProcessPoolExecutor(n, mp_context=context, initializer=_init_worker,
                             initargs=(slots, bool(options.gpus))) as pool:
        futures = {pool.submit(execute, t): t for t in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                outcome = future.result()
            except Exception as err:  # noqa: BLE001 - a worker died (killed, out of memory)
                outcome = Outcome(task.name, "failed", "stopped: a worker process of the pool "
                                  f"died ({type(err).__name__})")
            outcomes[task.name] = outcome
            console.print(line(outcome, task.label), highlight=False)
    return [outcomes[t.name] for t in tasks]


@register("slurm", "a Slurm job array through submitit (--cluster local: the same jobs as local "
          "processes)", ("partition", "time", "gpus_per_job", "cpus_per_job", "mem", "account",
                         "array_parallelism", "cluster", "wait"))
def launch_slurm(runs: list[GridRun], options: LaunchOptions, root: Path,
                 console: Console) -> list[Outcome]:
    try:
        from .sweep_slurm import submit
    except ModuleNotFoundError as err:
        if err.name != "submitit":
            raise
        raise ConfigError('--launcher slurm needs submitit: pip install "align[slurm]"') from None
    return submit(tasks_of(runs, root, threads=options.cpus_per_job), options, root, console)


def line(outcome: Outcome, label: str) -> str:
    """One line per run for the terminal."""
    detail = (f" ({outcome.seconds:.0f} s)" if outcome.status == "trained" else
              f": {outcome.message}" if outcome.message else "")
    return f"{outcome.status:9} {label}{detail}"
