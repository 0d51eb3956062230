"""The `align` command line, one command per task:

- `align synth`: generate the synthetic benchmark (images, object masks, cue masks);
- `align pretrain`: pre-train a backbone on the upstream task (the stand-in for ImageNet);
- `align train`: train one algorithm under one protocol (resumable);
- `align quickstart`: the synthetic benchmark and a few algorithms on the CPU;
- `align benchmark`: every regime x algorithm x held-out domain x seed on the synthetic benchmark;
- `align masks`: build a masks folder from a mask source;
- `align shortcut`: does each run's Grad-CAM rest on the object or on the cue?;
- `align mask-quality`: mask-supervised training with masks of decreasing quality;
- `align evaluate`: accuracy and explanation metrics of a run;
- `align hparams`: an algorithm's hyperparameters as a Markdown table;
- `align report`, `align collect` (`align.cli_collect`): reports over runs, sweep tables;
- `align prepare`, `align check`: download and lay out, or check, a DomainBed dataset
  (`align.cli_data`);
- `align sweep`: algorithms x protocol cells x hyperparameter draws x seeds on any dataset, on
  a local, pool or Slurm launcher (`align.cli_sweep`).

Every choice a command offers (`--algorithm`, `--backbone`, `--protocol`, ...) is read from the
registry that defines it. Every command runs inside one error boundary (`AlignCommands`, in
`align.cli_base`): a user error is one paragraph and exit code 2, anything else a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import io
from .algorithms import ALGORITHMS
from .cli_base import app, console, expand_multi, one_of
from .data.presets import PRESETS as DATASET_PRESETS
from .data.synthetic import CUE_KINDS
from .errors import ConfigError
from .evaluation_presets import PRESETS as EVALUATION_PRESETS
from .masks.degrade import DEGRADATIONS
from .masks.sources import MASK_SOURCES
from .metrics import METRICS
from .metrics.explanations import EXPLAINERS
from .metrics.substrates import SUBSTRATES  # the substrate names' one import (--substrate)
from .models.backbones import BACKBONES
from .protocols import PROTOCOLS
from .regimes import REGIMES
from .training.precision import PRECISIONS
from .training.presets import PRESETS as TRAINING_PRESETS
from .training.selection import SELECTION_METHODS


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder (gets images/, masks/, cues/, synth.json).")],
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    n_per_domain: Annotated[int, typer.Option(help="Images per domain.")] = 500,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    cue_strength: Annotated[float, typer.Option(help="P(the cue agrees with the class's mapped cue).")] = 0.9,
    cue_kind: Annotated[str, typer.Option(
        help=f"{' | '.join(CUE_KINDS)} (square: a small cue square; background: a tint of the "
             "whole background).")] = "square",
    overwrite: Annotated[bool, typer.Option(help="Replace a synthetic benchmark made by align synth (never another folder).")] = False,
) -> None:
    """Generate the synthetic benchmark in the DomainBed layout, with exact object and cue masks."""
    import dataclasses

    from .data.synthetic import DEFAULT_CONFIG, generate

    cfg = dataclasses.replace(DEFAULT_CONFIG, n_per_domain=n_per_domain, size=size,
                              cue_strength=cue_strength, cue_kind=cue_kind)
    path = generate(out, cfg, seed=seed, overwrite=overwrite)
    console.print(f"wrote {path}/images, {path}/masks and {path}/cues ({cue_kind} cue)")


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="Folder for the weights file and its .json record.")],
    backbone: Annotated[str, one_of(BACKBONES, "Backbone.")] = "smallcnn",
    seed: Annotated[int, typer.Option(help="Seed (upstream data, init, data order).")] = 0,
    image_size: Annotated[int, typer.Option(help="Image side in pixels (the benchmark's).")] = 64,
    steps: Annotated[Optional[int], typer.Option(help="Training steps (default: the fixed recipe's).")] = None,
) -> None:
    """Pre-train a backbone on the upstream task (12 shapes disjoint from the benchmark's, no
    cue): the synthetic stand-in for ImageNet. Cached; prints the weights file for `pretrained:`."""
    import dataclasses

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from .pretrain import DEFAULT_PRETRAIN, ensure_pretrained, is_finished, weights_path

    cfg = DEFAULT_PRETRAIN if steps is None else dataclasses.replace(DEFAULT_PRETRAIN, steps=steps)
    cached = is_finished(weights_path(out, backbone, image_size, seed, cfg))
    with Progress("[bold]pretrain", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("pretrain", total=cfg.steps)
        path = ensure_pretrained(out, backbone, image_size, seed, cfg,
                                 progress=lambda step, total: bar.update(task, completed=step))
    record = io.read_json(path.with_suffix(".json"))
    console.print(f"{'cached' if cached else 'trained'}: {path} (upstream accuracy "
                  f"{record['upstream_val_accuracy']:.1%}, chance {record['chance']:.1%}, "
                  f"{record['seconds']:.0f} s)")


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(help="Dataset root: DATA/<domain>/<class>/<image>.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (resumed if it exists).")] = None,
    masks: Annotated[Optional[Path], typer.Option(help="Masks root with the same relative paths.")] = None,
    dataset: Annotated[Optional[str], one_of(DATASET_PRESETS, "Dataset layout to validate against.")] = None,
    algorithm: Annotated[Optional[str], one_of(ALGORITHMS, "Algorithm.")] = None,
    protocol: Annotated[Optional[str], one_of(PROTOCOLS, "Protocol.")] = None,
    test_domains: Annotated[Optional[list[str]], typer.Option(help="lodo: held-out domain(s).")] = None,
    train_domains: Annotated[Optional[list[str]], typer.Option(help="single_source: the source domain.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed (split, data order, init).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML/JSON file with any other config key.")] = None,
    preset: Annotated[Optional[str], one_of(
        TRAINING_PRESETS, "Training preset (its settings < --config < flags).")] = None,
    selection: Annotated[Optional[str], one_of(
        SELECTION_METHODS, "Model selection that checkpoints/best.pt follows.")] = None,
    backbone: Annotated[Optional[str], one_of(BACKBONES, "Backbone.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda.")] = None,
    precision: Annotated[Optional[str], one_of(
        PRECISIONS, "Autocast type of forward passes and losses (bf16: GPUs).")] = None,
    channels_last: Annotated[Optional[bool], typer.Option(
        help="Networks and batches in channels-last memory format.")] = None,
    skip_bad_images: Annotated[Optional[bool], typer.Option(help="Skip unreadable images (reported).")] = None,
) -> None:
    """Train one algorithm on a DomainBed-layout dataset under one protocol."""
    from .config import make_config
    from .training.loop import Trainer
    from .ui import progress_bar, print_summary

    flags = dict(
        data=str(data) if data else None, out=str(out) if out else None,
        masks=str(masks) if masks else None, dataset=dataset, algorithm=algorithm,
        protocol=protocol, test_domains=test_domains or None,
        train_domains=train_domains or None, steps=steps, seed=seed, selection=selection,
        backbone=backbone, device=device, precision=precision, channels_last=channels_last,
        skip_bad_images=skip_bad_images,
    )
    # Only the flags given on the command line override the preset and the config file.
    cfg = make_config(config, preset=preset, **{k: v for k, v in flags.items() if v is not None})
    with progress_bar(cfg.steps, cfg.algorithm) as prog:
        trainer = Trainer(cfg, prog)
        if trainer.folder.skipped:
            console.print(f"[yellow]skipped {len(trainer.folder.skipped)} unreadable image(s)[/]")
        summary = trainer.run()
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

    run_quickstart(out, steps=steps, seed=seed, console=console)


@app.command()
def benchmark(
    out: Annotated[Path, typer.Option(help="Folder for the regimes' data and runs, and regimes.md.")] = Path("benchmark"),
    regime: Annotated[Optional[list[str]], one_of(
        REGIMES, "Regime(s) (repeatable; default: all).")] = None,
    algorithms: Annotated[Optional[list[str]], one_of(
        ALGORITHMS, "Algorithms to compare (default: erm, dre, align, gradia).")] = None,
    seeds: Annotated[Optional[list[int]], typer.Option(help="Seeds.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Steps per run (default: the quickstart's).")] = None,
    test_domains: Annotated[Optional[list[str]], typer.Option(help="Held-out domains (default: all).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="KEY=VALUE hyperparameter for every run (repeatable); runs go to <algo>-KEY=VALUE.")] = None,
    shard: Annotated[Optional[str], typer.Option(
        help="I/N: run only every N-th run from the I-th (cluster array jobs); no table.")] = None,
) -> None:
    """Leave-one-domain-out on the synthetic benchmark: every regime x algorithm x held-out
    domain x seed, with the quickstart's settings. Each regime goes to OUT/<regime>/ (its
    results.md per held-out domain); OUT/regimes.md compares them (resumable)."""
    from .experiments.four_regimes import run_regimes
    from .sweep import parse_overrides, parse_shard, run_synthetic_benchmark

    algorithms = algorithms or ["erm", "dre", "align", "gradia"]
    regimes = regime or REGIMES.names()
    overrides = parse_overrides(set_ or [], algorithms)
    if overrides:  # a variant: its own runs and results-KEY=VALUE.md in each regime's folder
        for r in regimes:
            run_synthetic_benchmark(out / r, algorithms, seeds or [0, 1, 2], steps=steps,
                                    test_domains=test_domains, console=console,
                                    overrides=overrides, shard=parse_shard(shard), regime=r,
                                    pretrained_dir=out / "pretrained")
    else:
        run_regimes(out, regimes, algorithms, seeds or [0, 1, 2], steps=steps,
                    test_domains=test_domains, console=console, shard=parse_shard(shard))


@app.command()
def masks(
    data: Annotated[Path, typer.Option(help="Images root: DATA/<domain>/<class>/<image>.")],
    out: Annotated[Path, typer.Option(help="Masks folder to write (same relative paths, .png).")],
    source: Annotated[str, one_of(MASK_SOURCES, "Mask source.")] = "generic",
    gt: Annotated[Optional[Path], typer.Option(help="Ground-truth masks (ground_truth, degraded; adds IoUs).")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="Source parameter KEY=VALUE (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of random degradations.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a folder built with other settings.")] = False,
) -> None:
    """Build a masks folder from a mask source, once (cached), for mask-supervised training."""
    from .config import load_yaml
    from .masks import build_mask_folder, read_record

    params = {}
    for item in param or []:
        if "=" not in item:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        params[k] = load_yaml(v)
    root = build_mask_folder(data, out, source, gt_root=gt, params=params, seed=seed,
                             overwrite=overwrite)
    iou = read_record(root).get("mean_iou")
    console.print(f"masks in {root}" + (f" (mean IoU with the truth {iou:.3f})" if iou is not None else ""))


@app.command()
def shortcut(
    out: Annotated[Path, typer.Option(help="A folder of `align benchmark` / `align mask-quality`.")] = Path("benchmark"),
    max_batches: Annotated[Optional[int], typer.Option(help="At most N batches per split (0: all).")] = 4,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
) -> None:
    """Does each run's Grad-CAM (and ALIGN's masker) rest on the object or on the cue? Scores every
    finished synthetic run against the object and the cue masks; writes OUT/shortcut.md."""
    from .experiments.shortcut import run_shortcut

    run_shortcut(out, max_batches=max_batches or None, batch_size=batch_size, console=console)
    console.print((out / "shortcut.md").read_text())


@app.command("mask-quality")
def mask_quality(
    out: Annotated[Path, typer.Option(help="Folder for data, masks, runs, table and plot.")] = Path("mask_quality"),
    method: Annotated[str, one_of(
        ALGORITHMS, "Mask-supervised algorithm; align = ALIGN with the masks in place of its masker.")] = "gradia",
    seeds: Annotated[Optional[list[int]], typer.Option(help="Seeds.")] = None,
    test_domains: Annotated[Optional[list[str]], typer.Option(help="Held-out domains (default: all).")] = None,
    levels: Annotated[Optional[list[float]], typer.Option(help="Target mask IoUs (1 = ground truth).")] = None,
    kind: Annotated[str, one_of(DEGRADATIONS, "Degradation.")] = "dilate",
    steps: Annotated[Optional[int], typer.Option(help="Steps per run (default: the quickstart's).")] = None,
) -> None:
    """Mask-supervised training with masks of decreasing quality vs ERM and ALIGN (synthetic)."""
    from .experiments.mask_quality import output_stem, run_mask_quality

    # refuses a method that ignores masks before anything is written
    run_mask_quality(out, method=method, seeds=seeds or [0, 1, 2], test_domains=test_domains,
                     levels=levels or [1.0, 0.9, 0.8], kind=kind, steps=steps, console=console)
    stem = output_stem(method)
    console.print((out / f"{stem}.md").read_text())
    console.print(f"plot: {out / f'{stem}.png'}")


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (from `align train`).")],
    # The run directory's two checkpoints (checkpoints/best.pt and last.pt).
    checkpoint: Annotated[str, one_of(("best", "last"), "Checkpoint (best: the run's `selection`).")] = "best",
    explainer: Annotated[str, one_of(EXPLAINERS, "Explainer.")] = "gradcam",
    substrate: Annotated[str, one_of(SUBSTRATES, "What removed pixels become.")] = "blur",
    max_batches: Annotated[Optional[int], typer.Option(help="At most N batches per split (default: all).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda | cuda:N (default: the run's).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Image root, if it moved since training.")] = None,
    masks: Annotated[Optional[Path], typer.Option(help="Mask root, if it moved since training.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Recompute an existing evaluation.json.")] = False,
    metrics: Annotated[Optional[list[str]], one_of(
        METRICS, "Metrics to compute (default: all that the masks allow).")] = None,
    name: Annotated[Optional[str], typer.Option(
        help="Write evaluation-NAME.json instead (e.g. scores against other --masks).")] = None,
    preset: Annotated[Optional[str], one_of(
        EVALUATION_PRESETS, "A published protocol: fixes explainer, substrate and metrics; writes "
        "evaluation-PRESET.json.")] = None,
) -> None:
    """Accuracy and explanation metrics on every test split; writes RUN_DIR/evaluation.json
    (resumable: finished splits of an interrupted evaluation are kept)."""
    from .evaluate import EvalConfig, evaluate_run, evaluation_files
    from .ui import eval_progress_bar, evaluation_table

    out_name = evaluation_files(preset if name is None else name)[0]
    config = EvalConfig(checkpoint=checkpoint, explainer=explainer, substrate=substrate,
                        max_batches=max_batches, batch_size=batch_size, device=device,
                        data=data, masks=masks, metrics=metrics, name=name, preset=preset)
    with eval_progress_bar(f"evaluate {run_dir}", console) as prog:
        record = evaluate_run(run_dir, config, overwrite=overwrite, progress=prog)
    console.print(evaluation_table(record, str(run_dir), preset))
    console.print(f"wrote {Path(run_dir) / out_name}")


@app.command()
def hparams(
    algorithm: Annotated[str, one_of(ALGORITHMS, "Algorithm.", typer.Argument)],
) -> None:
    """Print an algorithm's hyperparameters (defaults, meaning, source, sweep range) as Markdown."""
    from .hparams import markdown_table

    typer.echo(markdown_table(ALGORITHMS.get(algorithm).hparam_spec()), nl=False)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories, or folders holding runs.")],
    out: Annotated[Path, typer.Option(help="Report folder (tables, figures, index.html).")] = Path("report"),
) -> None:
    """Tables (Markdown, CSV, LaTeX), figures and index.html over run directories (mean ± std
    over seeds), from the files `align train` and `align evaluate` wrote (evaluate runs first)."""
    from .report.build import make_report

    index = make_report(run_dirs, out)
    console.print(f"report: {index}")


from .cli_collect import register as _register_collect_commands  # noqa: E402
from .cli_data import register as _register_data_commands  # noqa: E402
from .cli_sweep import register as _register_sweep_command  # noqa: E402
_register_data_commands(app)
_register_sweep_command(app)
_register_collect_commands(app)

def main() -> None:
    import sys

    app(args=expand_multi(sys.argv[1:]), prog_name="align")


if __name__ == "__main__":
    main()
