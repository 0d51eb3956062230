"""The public Python API: train a model, load a run, predict.

Example (a notebook)::

    import align
    summary = align.train(data="data/synth/images", masks="data/synth/masks", out="runs/erm",
                          algorithm="erm", test_domains=["sketch"], backbone="smallcnn",
                          pretrained=None, image_size=64, steps=300)
    run = align.load_run("runs/erm")            # best checkpoint by the run's selection criterion
    x = run.preprocess(["photo.png"])           # [B, 3, H, W], the run's evaluation transform
    logits = run.predict(x)                     # [B, K]
    cam = run.gradcam(x)                        # [B, 1, H, W] in [0, 1], the predicted class
    picture = overlay(x, cam)                   # uint8 [B, H, W, 3]: heat map over the image
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from . import io
from .algorithms import Algorithm, build_algorithm
from .config import TrainConfig, make_config
from .rundir import RunFiles
from .training.loop import Progress, Trainer


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

    def preprocess(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Image files -> x [B, 3, H, W]: decoded and transformed exactly as the run's evaluation
        (resize to its `image_size`, ImageNet normalisation)."""
        from .data.decode import load_rgb
        from .data.transforms import build_transform

        transform = build_transform(self.config["image_size"], train=False)
        return torch.stack([transform(load_rgb(p))[0] for p in paths])

    def gradcam(self, x: torch.Tensor, target: torch.Tensor | int | None = None) -> torch.Tensor:
        """Grad-CAM [B, 1, H, W] in [0, 1] of `target` (default: the predicted class) at the
        backbone's last block, upsampled to x's size, for x [B, 3, H, W] (normalised)."""
        from .explain.gradcam import gradcam

        self.algorithm.eval()
        clf = self.algorithm.classifier
        dev = next(clf.parameters()).device
        return gradcam(clf, clf.backbone.cam_layer, x.to(dev), target, upsample=True).detach()

    @torch.no_grad()
    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """ALIGN's learned mask [B, 1, H, W] in [0, 1] for x [B, 3, H, W]; ValueError for a run
        without a masker."""
        masker = getattr(self.algorithm, "masker", None)
        if masker is None:
            raise ValueError(f"{self.path}: algorithm {self.config['algorithm']!r} has no masker")
        masker.eval()
        return masker(x.to(next(masker.parameters()).device))

    @property
    def results(self) -> list[dict]:
        """results.jsonl: one record per evaluation during training."""
        return RunFiles(self.path).records()

    @property
    def summary(self) -> dict:
        """summary.json: the selected checkpoints and their accuracies."""
        return RunFiles(self.path).summary()


def overlay(x: torch.Tensor, maps: torch.Tensor, alpha: float = 0.5) -> "np.ndarray":
    """Heat maps over images, for a look: x [B, 3, H, W] (ImageNet-normalised, as `preprocess`
    gives) and maps [B, 1, H, W] in [0, 1] -> uint8 [B, H, W, 3], the map in matplotlib's "jet"
    colours blended with weight `alpha` over the de-normalised image."""
    import numpy as np
    from matplotlib import colormaps

    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    image = (x.detach().cpu().float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    heat = colormaps["jet"](maps.detach().cpu().float()[:, 0].clamp(0, 1).numpy())[..., :3]
    return np.rint(255 * ((1 - alpha) * image + alpha * heat)).astype(np.uint8)


def load_run(path: str | Path, checkpoint: str = "best", device: str = "cpu") -> Run:
    """Load a run directory's networks from `checkpoint` ("best" or "last")."""
    files = RunFiles(path)
    ckpt_path = files.checkpoint(checkpoint)
    cfg, dataset, protocol = files.config(), files.dataset(), files.protocol()
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path} not found: has {files.path} been trained?")
    algo = build_algorithm(
        cfg["algorithm"], backbone=cfg["backbone"], num_classes=len(dataset["classes"]),
        num_domains=len(protocol["train_domains"]), hparams=cfg["hparams"],
        pretrained=None, freeze_bn=cfg["freeze_bn"],
    )
    state = io.load_checkpoint(ckpt_path)
    algo.load_state_dict(state["algorithm"])
    algo.to(device).eval()
    return Run(Path(path), cfg, dataset["classes"], dataset["domains"], algo, state["step"])
