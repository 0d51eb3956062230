"""`align sweep`: algorithms x protocol cells x hyperparameter draws x trial seeds on any
DomainBed-layout dataset, launched locally, on a pool of processes or GPUs, or on Slurm
(`align.experiments.sweep_run`; docs/sweeps.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .algorithms import ALGORITHMS
from .cli_base import one_of
from .data.presets import PRESETS as DATASET_PRESETS
from .experiments.sweep_launch import LAUNCHERS
from .regimes import REGIMES
from .training.presets import PRESETS as TRAINING_PRESETS
from .protocols import PROTOCOLS


def sweep_command(
    out: Annotated[Path, typer.Option(help="The sweep folder (sweep.json, runs/, logs).")],
    data: Annotated[Optional[Path], typer.Option(
        help="Dataset root in the DomainBed layout: DATA/<domain>/<class>/<image>.")] = None,
    dataset: Annotated[Optional[str], one_of(DATASET_PRESETS, "A dataset preset to check --data against.")] = None,
    masks: Annotated[Optional[Path], typer.Option(
        help="Masks root with the same relative paths (for mask-supervised algorithms).")] = None,
    synthetic: Annotated[Optional[str], one_of(
        REGIMES, "Instead of --data: the built-in synthetic benchmark of this regime, made in "
        "OUT/data, with the quickstart's settings.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="Sweep file: `align train --config` keys plus a `sweep:` section (docs/sweeps.md).")] = None,
    preset: Annotated[Optional[str], one_of(
        TRAINING_PRESETS, "Training preset under the config (its algorithm is replaced per run).")] = None,
    algorithms: Annotated[Optional[list[str]], one_of(ALGORITHMS, "Algorithms (repeatable).")] = None,
    protocols: Annotated[Optional[list[str]], one_of(
        PROTOCOLS, "Protocols (repeatable; default lodo).")] = None,
    seeds: Annotated[Optional[list[int]], typer.Option(help="Trial seeds (default 0 1 2).")] = None,
    n_hparams: Annotated[Optional[int], typer.Option(
        help="Hyperparameter draws per cell and seed; draw 0 is the defaults (default 1).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="KEY=VALUE (every algorithm) or ALGORITHM.KEY=VALUE, in every draw.")] = None,
    test_domains: Annotated[Optional[list[str]], typer.Option(
        help="lodo: only these held-out domains (default: each domain).")] = None,
    train_domains: Annotated[Optional[list[str]], typer.Option(
        help="single_source: only these sources (default: each domain).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps per run.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N.")] = None,
    launcher: Annotated[str, one_of(LAUNCHERS, "How the runs are executed.")] = "local",
    workers: Annotated[Optional[int], typer.Option(help="pool: worker processes.")] = None,
    gpus: Annotated[Optional[str], typer.Option(help="pool: GPU ids, one worker each (0,1,2,3).")] = None,
    partition: Annotated[Optional[str], typer.Option(help="slurm: partition.")] = None,
    time: Annotated[Optional[int], typer.Option(help="slurm: minutes per job (requeued after).")] = None,
    gpus_per_job: Annotated[Optional[int], typer.Option(help="slurm: GPUs per job.")] = None,
    cpus_per_job: Annotated[Optional[int], typer.Option(help="slurm: CPUs per job.")] = None,
    mem: Annotated[Optional[float], typer.Option(help="slurm: memory per job in GB.")] = None,
    account: Annotated[Optional[str], typer.Option(help="slurm: account.")] = None,
    array_parallelism: Annotated[Optional[int], typer.Option(
        help="slurm: array tasks running at once.")] = None,
    cluster: Annotated[str, one_of(
        ("slurm", "local"), "slurm: submitit's cluster; local runs the job array on this machine.")] = "slurm",
    wait: Annotated[bool, typer.Option(help="slurm: wait for the jobs and report each run.")] = False,
    dry_run: Annotated[bool, typer.Option(
        help="Print the grid, one line per run with its status; write nothing.")] = False,
    estimate: Annotated[bool, typer.Option(
        help="Time an iteration of each kind of run on this machine and print the grid's "
             "device-hours; write nothing (run it where the sweep will train).")] = False,
) -> None:
    """Sweep algorithms x protocol cells x hyperparameter draws x seeds (resumable: finished
    runs are skipped, interrupted ones resumed, runs another launcher trains are skipped)."""
    from .cli_base import console
    from .experiments.sweep_launch import LaunchOptions
    from .experiments.sweep_run import SweepInputs, run_sweep, sweep_spec

    inputs = SweepInputs(
        out=out, data=data, dataset=dataset, masks=masks, synthetic=synthetic, config=config,
        preset=preset, algorithms=tuple(algorithms or ()), protocols=tuple(protocols or ()),
        seeds=tuple(seeds or ()), n_hparams=n_hparams, set=tuple(set_ or ()),
        test_domains=tuple(test_domains or ()), train_domains=tuple(train_domains or ()),
        steps=steps, device=device)
    options = LaunchOptions(
        workers=workers, gpus=tuple(g.strip() for g in gpus.split(",")) if gpus else (),
        partition=partition, time=time, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job,
        mem=mem, account=account, array_parallelism=array_parallelism, cluster=cluster,
        wait=wait)
    if estimate:
        from .experiments.sweep_cost import estimate_sweep

        estimate_sweep(sweep_spec(inputs, console, make=False), out, synthetic, console)
        return
    spec = sweep_spec(inputs, console, make=not dry_run)
    run_sweep(spec, out, launcher, options, console, dry_run=dry_run)


def register(app: typer.Typer) -> None:
    """Add `align sweep` to the command line."""
    app.command("sweep")(sweep_command)
