"""The `align` command line: `align synth`, `align train`, `align quickstart`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .algorithms import ALGORITHMS
from .config import PROTOCOLS

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="ALIGN and explanation-guided learning baselines (arXiv 2511.06944).")
console = Console()


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder (gets images/, masks/, synth.json).")],
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    n_per_domain: Annotated[int, typer.Option(help="Images per domain.")] = 500,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    cue_strength: Annotated[float, typer.Option(help="P(background cue agrees with the class).")] = 0.9,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Generate the synthetic benchmark in the DomainBed layout, with exact object masks."""
    import dataclasses

    from .data.synthetic import DEFAULT_CONFIG, generate

    try:
        cfg = dataclasses.replace(DEFAULT_CONFIG, n_per_domain=n_per_domain, size=size,
                                  cue_strength=cue_strength)
        path = generate(out, cfg, seed=seed, overwrite=overwrite)
    except (ValueError, FileExistsError) as e:
        _fail(e)
    console.print(f"wrote {path}/images and {path}/masks")


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(help="Dataset root: DATA/<domain>/<class>/<image>.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (resumed if it exists).")] = None,
    masks: Annotated[Optional[Path], typer.Option(help="Masks root with the same relative paths.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Preset to validate against: vlcs | terra_incognita.")] = None,
    algorithm: Annotated[Optional[str], typer.Option(help=f"One of: {', '.join(ALGORITHMS.names())}.")] = None,
    protocol: Annotated[Optional[str], typer.Option(help=f"One of: {', '.join(PROTOCOLS)}.")] = None,
    test_domains: Annotated[Optional[list[str]], typer.Option(help="lodo: held-out domain(s).")] = None,
    train_domains: Annotated[Optional[list[str]], typer.Option(help="single_source: the source domain.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed (split, data order, init).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML/JSON file with any other config key.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="resnet18 | resnet50 | smallcnn.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda.")] = None,
    skip_bad_images: Annotated[Optional[bool], typer.Option(help="Skip unreadable images (reported).")] = None,
) -> None:
    """Train one algorithm on a DomainBed-layout dataset under one protocol."""
    from .config import make_config
    from .data.folder import DataError
    from .train.loop import NonFiniteLoss, Trainer
    from .ui import progress_bar, print_summary

    try:
        cfg = make_config(
            config, data=str(data) if data else None, out=str(out) if out else None,
            masks=str(masks) if masks else None, dataset=dataset, algorithm=algorithm,
            protocol=protocol, test_domains=test_domains or None,
            train_domains=train_domains or None, steps=steps, seed=seed, backbone=backbone,
            device=device, skip_bad_images=skip_bad_images,
        )
        with progress_bar(cfg.steps, cfg.algorithm) as prog:
            trainer = Trainer(cfg, prog)
            if trainer.folder.skipped:
                console.print(f"[yellow]skipped {len(trainer.folder.skipped)} unreadable image(s)[/]")
            summary = trainer.run()
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, DataError, NonFiniteLoss) as e:
        _fail(e)
    print_summary(console, {cfg.algorithm: (summary, trainer.protocol.to_json())})
    console.print(f"run directory: {cfg.out}")


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="Folder for the data and the runs.")] = Path("quickstart"),
    steps: Annotated[Optional[int], typer.Option(help="Training steps per algorithm.")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Generate the synthetic benchmark and train on the CPU; print per-domain accuracies."""
    from .quickstart import run_quickstart

    try:
        run_quickstart(out, steps=steps, seed=seed, console=console)
    except (ValueError, FileExistsError) as e:
        _fail(e)


@app.command()
def benchmark(
    out: Annotated[Path, typer.Option(help="Folder for the data, the runs and results.md.")] = Path("benchmark"),
    algorithms: Annotated[Optional[list[str]], typer.Option(help="Algorithms to compare.")] = None,
    seeds: Annotated[Optional[list[int]], typer.Option(help="Seeds.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Steps per run (default: the quickstart's).")] = None,
) -> None:
    """Leave-one-domain-out on the synthetic benchmark: every algorithm x held-out domain x seed,
    with the quickstart's settings; writes a mean +- std table (resumable)."""
    from .sweep import run_synthetic_benchmark

    for a in algorithms or []:
        if a not in ALGORITHMS:
            _fail(KeyError(f"unknown algorithm {a!r}; choose from {', '.join(ALGORITHMS.names())}"))
    run_synthetic_benchmark(out, algorithms or ["erm", "dre", "align"], seeds or [0, 1, 2],
                            steps=steps, console=console)


_MULTI = ("--test-domains", "--train-domains", "--algorithms", "--seeds")


def expand_multi(argv: list[str]) -> list[str]:
    """Let `--test-domains A B` mean `--test-domains A --test-domains B` (click takes one value
    per option occurrence)."""
    out: list[str] = []
    flag = None
    for arg in argv:
        if arg.startswith("-"):
            flag = arg if arg in _MULTI else None
            out.append(arg)
        elif flag and out[-1] != flag:
            out += [flag, arg]
        else:
            out.append(arg)
    return out


def main() -> None:
    import sys

    app(args=expand_multi(sys.argv[1:]), prog_name="align")


if __name__ == "__main__":
    main()
