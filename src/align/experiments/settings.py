"""Settings shared by `align quickstart`, `align benchmark` (`align.sweep`) and the experiments
(`align mask-quality`, the four regimes): one place, so that every run of the synthetic benchmark
is trained the same way and runs of one command can be reused by another (same configs).

They were fixed before comparing methods and are not tuned per method; the README documents them.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .. import io
from ..data.synthetic import DEFAULT_CONFIG, SynthConfig, dataset_matches, generate

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
    version or another cue kind, is regenerated in place).

    Processes that share `root` (launchers of one sweep, array jobs) take turns through a lock
    file beside it: one generates, the others then find the finished dataset."""
    root = Path(root)
    with io.ProcessLock(root.parent / f".{root.name}.lock", wait=True, remove=True):
        if dataset_matches(root, config, seed):
            console.print(f"using the synthetic benchmark in {root}")
            return root
        console.print(f"generating the synthetic benchmark in {root} (seed {seed}, "
                      f"{config.cue_kind} cue) ...")
        return generate(root, config, seed=seed, overwrite=root.exists())


def cue_scores(data: Path) -> dict:
    """`eval_masks` scoring ALIGN's masker against the synthetic benchmark's cue masks at every
    evaluation, when `data` has them: every experiment on that data sets the same key, so runs
    they share (mask-quality reuses the benchmark's ERM and ALIGN runs) have one config."""
    return {"eval_masks": {"cue": str(Path(data) / "cues")}} if (Path(data) / "cues").is_dir() else {}


def synthetic_source(out: Path, regime: str, console: Console, backbone: str, image_size: int,
                     pretrained_dir: Path | None = None, make: bool = True,
                     data_seed: int = 0) -> dict:
    """TrainConfig fields of the synthetic benchmark of one regime (`align.regimes`) in
    `out/data` (generated with `data_seed`): its images, object masks and cue masks (scored at
    every evaluation as `@cue`), and the regime's initialisation (the pretrained stand-in for
    this backbone and image size, kept in `pretrained_dir`, default `out/pretrained`). Data and
    weights are made once, under locks; with `make=False` nothing is made (a dry run's paths)."""
    from ..regimes import REGIMES

    spec, data = REGIMES.get(regime), Path(out) / "data"
    if make:
        ensure_data(data, data_seed, console, spec.synth_config)
    return {"data": str(data / "images"), "masks": str(data / "masks"),
            "eval_masks": {"cue": str(data / "cues")},
            **spec.train_settings(Path(pretrained_dir or Path(out) / "pretrained"), backbone,
                                  image_size, console, make=make)}
