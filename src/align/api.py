"""The public Python API: train a model, load a run, predict.

Example (a notebook)::

    import align
    summary = align.train(data="data/synth/images", masks="data/synth/masks", out="runs/erm",
                          algorithm="erm", test_domains=["sketch"], backbone="smallcnn",
                          pretrained=None, image_size=64, steps=300)
    run = align.load_run("runs/erm")            # best checkpoint by the run's selection criterion
    logits = run.predict(images)                # images: [B, 3, H, W], normalised
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import io
from .algorithms import Algorithm, build_algorithm
from .config import TrainConfig, make_config
from .training.loop import Progress, Trainer
from .training.rundir import RunDir


def train(config: TrainConfig | None = None, *, config_file: str | None = None,
          preset: str | None = None, progress: Progress | None = None, **overrides: Any) -> dict:
    """Train (or resume) a run; returns its summary (see `training.selection.summarize`).

    Pass a `TrainConfig`, or keyword overrides of its fields (plus an optional config file and a
    named preset, e.g. `preset="dre"`; precedence: defaults < preset < file < overrides).
    """
    if config is None:
        config = make_config(config_file, preset=preset, **overrides)
    elif config_file is not None or preset is not None or overrides:
        raise ValueError("pass either a TrainConfig or config_file / preset / overrides, not both")
    return Trainer(config, progress).run()


@dataclass
class Run:
    """A trained run loaded from its directory."""

    path: Path
    config: dict
    classes: list[str]
    domains: list[str]
    algorithm: Algorithm
    step: int

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] (normalised as in training) -> logits [B, K]."""
        self.algorithm.eval()
        dev = next(self.algorithm.parameters()).device
        return self.algorithm.predict(x.to(dev))

    @property
    def results(self) -> list[dict]:
        return io.read_jsonl(self.path / "results.jsonl")

    @property
    def summary(self) -> dict:
        return json.loads((self.path / "summary.json").read_text())


def load_run(path: str | Path, checkpoint: str = "best", device: str = "cpu") -> Run:
    """Load a run directory's networks from `checkpoint` ("best" or "last")."""
    rd = RunDir(path)
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    cfg = rd.read_json("config.json")
    dataset = rd.read_json("dataset.json")
    protocol = rd.read_json("protocol.json")
    ckpt_path = rd.best_ckpt if checkpoint == "best" else rd.last_ckpt
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path} not found: has {rd.path} been trained?")
    algo = build_algorithm(
        cfg["algorithm"], backbone=cfg["backbone"], num_classes=len(dataset["classes"]),
        num_domains=len(protocol["train_domains"]), hparams=cfg["hparams"],
        pretrained=None, freeze_bn=cfg["freeze_bn"],
    )
    state = io.load_checkpoint(ckpt_path)
    algo.load_state_dict(state["algorithm"])
    algo.to(device).eval()
    return Run(Path(path), cfg, dataset["classes"], dataset["domains"], algo, state["step"])
