"""`align quickstart`: the synthetic benchmark, trained on the CPU in a few minutes.

Generates the benchmark (cached: regenerated only if missing), trains each quickstart algorithm
under leave-one-domain-out with the last domain held out, and prints per-domain accuracies side by
side. It ends with `align evaluate` on each run (64 images per split, `QUICKSTART_EVAL`) and an
`align report` of both in `OUT/report/index.html`. Its training settings live in
`align.experiments.settings`, shared with `align benchmark` and the experiments; they are
documented in the README, were set before comparing methods and are not tuned per method.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .config import TrainConfig
from .evaluation_presets import EvalConfig
from .experiments.settings import (  # noqa: F401 - ensure_data: align.quickstart.ensure_data
    QUICKSTART_SETTINGS, ensure_data, quickstart_hparams, synthetic_source)

#: Algorithms the quickstart trains, in order.
QUICKSTART_ALGORITHMS: tuple[str, ...] = ("erm", "align")

#: The quickstart fine-tunes the upstream-pretrained stand-in on the default benchmark (square
#: cue), as the paper and DomainBed fine-tune ImageNet backbones (issue 12, item 8; decided before
#: any comparison).
QUICKSTART_REGIME = "square-pretrained"


def run_quickstart(out: Path, steps: int | None = None, seed: int = 0,
                   console: Console | None = None,
                   algorithms: tuple[str, ...] = QUICKSTART_ALGORITHMS) -> dict:
    """Run the quickstart; returns {algorithm: (summary, protocol)}."""
    from .training.loop import Trainer
    from .ui import print_summary, progress_bar

    console = console or Console()
    out = Path(out)
    settings = {**QUICKSTART_SETTINGS, **({"steps": steps} if steps else {})}
    settings.update(synthetic_source(out, QUICKSTART_REGIME, console, settings["backbone"],
                                     settings["image_size"], data_seed=seed))
    domains = sorted(p.name for p in Path(settings["data"]).iterdir() if p.is_dir())
    results = {}
    for algo in algorithms:
        cfg = TrainConfig(
            out=str(out / "runs" / algo), algorithm=algo, protocol="lodo",
            test_domains=[domains[-1]], seed=seed,
            hparams=quickstart_hparams(algo, settings["steps"]), **settings,
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
QUICKSTART_EVAL = EvalConfig(max_batches=1, batch_size=64)


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
                evaluate_run(run, QUICKSTART_EVAL, progress=prog)
        return make_report(run_dirs, out)
    finally:
        torch.set_num_threads(threads)
