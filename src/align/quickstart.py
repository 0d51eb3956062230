"""`align quickstart`: the synthetic benchmark, trained on the CPU in a few minutes.

Generates the benchmark (cached: regenerated only if missing), trains each quickstart algorithm
under leave-one-domain-out with the last domain held out, and prints per-domain accuracies side by
side. It ends with `align evaluate` on each run (64 images per split, `QUICKSTART_EVAL`) and an
`align report` of both in `OUT/report/index.html`. The settings below are fixed for the quickstart
and documented in the README; they were set before comparing methods and are not tuned per method.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .config import TrainConfig
from .data.synthetic import DEFAULT_CONFIG, SynthConfig, dataset_matches, generate
from .regimes import REGIMES

#: Algorithms the quickstart trains, in order.
QUICKSTART_ALGORITHMS: tuple[str, ...] = ("erm", "align")

#: Training settings shared by every quickstart and synthetic-benchmark run (CPU, 64 px, small
#: CNN). Augmentation is off: DomainBed's hue jitter (0.3) would scramble the colour-coded cue
#: and the domain palettes that make the benchmark's distribution shift. The learning rate suits
#: a small network (DomainBed's 5e-5 is for ResNet-50); it is the same whether the network starts
#: from scratch or from the upstream-pretrained weights (align.regimes), so that initialisation is
#: the only difference between those regimes.
QUICKSTART_SETTINGS = dict(
    backbone="smallcnn", pretrained=None, image_size=64, batch_size=16, eval_every=100,
    steps=500, num_workers=1, device="cpu", eval_batch_size=256, augment=False,
)
QUICKSTART_LR = 3e-3

#: The quickstart fine-tunes the upstream-pretrained stand-in on the default benchmark (square
#: cue), as the paper and DomainBed fine-tune ImageNet backbones (issue 12, item 8; decided before
#: any comparison).
QUICKSTART_REGIME = "square-pretrained"


def quickstart_hparams(algorithm: str, steps: int) -> dict:
    """Hyperparameters of a quickstart run: the shared learning rate, and for ALIGN the default
    schedule scaled to the shorter run (warm-up 50% and masker warm-up 10% of the steps, the
    ratios of the defaults 2500 and 500 to DRE's 5000 steps)."""
    hp: dict = {"lr": QUICKSTART_LR}
    if algorithm == "align":
        hp.update(warmup_steps=steps // 2, masker_warmup_steps=steps // 10)
    return hp


def ensure_data(root: Path, seed: int, console: Console,
                config: SynthConfig = DEFAULT_CONFIG) -> Path:
    """The benchmark at `root`, generated unless it is already there with the same seed,
    generator version and configuration (`dataset_matches`; anything else, e.g. an older
    version or another cue kind, is regenerated in place)."""
    if dataset_matches(root, config, seed):
        console.print(f"using the synthetic benchmark in {root}")
        return root
    console.print(f"generating the synthetic benchmark in {root} (seed {seed}, "
                  f"{config.cue_kind} cue) ...")
    return generate(root, config, seed=seed, overwrite=root.exists())


def run_quickstart(out: Path, steps: int | None = None, seed: int = 0,
                   console: Console | None = None,
                   algorithms: tuple[str, ...] = QUICKSTART_ALGORITHMS) -> dict:
    """Run the quickstart; returns {algorithm: (summary, protocol)}."""
    from .training.loop import Trainer
    from .ui import print_summary, progress_bar

    console = console or Console()
    out = Path(out)
    regime = REGIMES.get(QUICKSTART_REGIME)
    data = ensure_data(out / "data", seed, console, regime.synth_config)
    domains = sorted(p.name for p in (data / "images").iterdir() if p.is_dir())
    settings = {**QUICKSTART_SETTINGS, **({"steps": steps} if steps else {})}
    settings.update(regime.train_settings(out / "pretrained", settings["backbone"],
                                          settings["image_size"], console))
    results = {}
    for algo in algorithms:
        cfg = TrainConfig(
            data=str(data / "images"), masks=str(data / "masks"), out=str(out / "runs" / algo),
            algorithm=algo, protocol="lodo", test_domains=[domains[-1]], seed=seed,
            hparams=quickstart_hparams(algo, settings["steps"]),
            eval_masks={"cue": str(data / "cues")}, **settings,
        )
        with progress_bar(cfg.steps, algo, console) as prog:
            trainer = Trainer(cfg, prog)
            summary = trainer.run()
        results[algo] = (summary, trainer.protocol.to_json())
    print_summary(console, results)
    console.print(f"runs in {out / 'runs'}")
    index = evaluate_and_report([out / "runs" / a for a in algorithms], out / "report", console)
    console.print(f"report: {index}")
    return results


#: Evaluation of the quickstart's runs: one batch of 64 images per split keeps it to seconds.
QUICKSTART_EVAL = dict(max_batches=1, batch_size=64)


def evaluate_and_report(run_dirs: list[Path], out: Path, console: Console) -> Path:
    """`evaluate_run` on each run (cached in its evaluation.json), then `make_report`.

    Runs on one intra-op thread (restored afterwards): on a 2-core machine shared with other jobs,
    two threads stalled on each other and took 45-55 s for what one thread does in 15 s
    (evaluation of both runs + report, measured); on an idle machine both stay well under 40 s.
    """
    import torch

    from .evaluate import evaluate_run
    from .report.build import make_report
    from .ui import eval_progress_bar

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for run in run_dirs:
            with eval_progress_bar(f"evaluate {run.name}", console) as prog:
                evaluate_run(run, progress=prog, **QUICKSTART_EVAL)
        return make_report(run_dirs, out)
    finally:
        torch.set_num_threads(threads)
