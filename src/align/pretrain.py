"""`align pretrain`: a backbone pre-trained on the upstream task, the stand-in for ImageNet.

The paper fine-tunes an ImageNet ResNet-50; the synthetic benchmark's runs otherwise start
from scratch. `ensure_pretrained` trains a backbone on the upstream task
(`align.data.upstream`: 12 shape classes disjoint from the benchmark's, a broad mix of
backgrounds, no spurious cue) and writes weights that `pretrained: PATH` loads; the
benchmark's classifier head stays new (`fc.*` keys are ignored by the loader).

Cached: the file name carries a hash of every setting, and a finished file is returned at
once. Deterministic: the same settings give the same weights (CPU, `PRETRAIN_THREADS`
threads). Written atomically; nothing else in the folder is touched. See docs/synthetic.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import __version__
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .data.upstream import UpstreamConfig, render_upstream_set
from .io import ProcessLock, read_json, save_checkpoint, write_json

#: Bump whenever the same settings would give different weights.
PRETRAIN_VERSION = 1
#: Intra-op threads while pre-training: fixed, so the weights do not depend on the machine.
#: One, because on a 2-core machine shared with other jobs two threads stalled on each other:
#: 0.35 CPU-s per step against 0.026 with one thread (smallcnn, 64 px, batch 64, measured).
PRETRAIN_THREADS = 1


@dataclass(frozen=True)
class PretrainConfig:
    """The upstream data and the recipe. Defaults fixed before any method was compared."""

    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    steps: int = 4000  # 128 k images seen, about 10 epochs; fits the 2-minute CPU budget
    batch_size: int = 32
    lr: float = 0.05  # SGD, Nesterov momentum 0.9, cosine decay to 0
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        if not isinstance(self.upstream, UpstreamConfig):
            raise ValueError(f"PretrainConfig.upstream: must be an UpstreamConfig, got {self.upstream!r}")
        for name, lo, hi in (("steps", 1, 10**6), ("batch_size", 1, 4096)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise ValueError(f"PretrainConfig.{name}: must be an integer in [{lo}, {hi}], got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1 \
                    or (name == "lr" and value == 0):
                raise ValueError(f"PretrainConfig.{name}: must be a number in "
                                 f"{'(0, 1)' if name == 'lr' else '[0, 1)'}, got {value!r}")
            object.__setattr__(self, name, float(value))


DEFAULT_PRETRAIN = PretrainConfig()


def _settings(backbone: str, image_size: int, seed: int, config: PretrainConfig) -> dict:
    return {"version": PRETRAIN_VERSION, "threads": PRETRAIN_THREADS, "backbone": backbone,
            "image_size": image_size, "seed": seed, "config": asdict(config)}


def weights_path(out_dir: str | os.PathLike, backbone: str = "smallcnn", image_size: int = 64,
                 seed: int = 0, config: PretrainConfig = DEFAULT_PRETRAIN) -> Path:
    """Where `ensure_pretrained` keeps these settings' weights: `OUT/<backbone>-<size>px-
    seed<seed>-<hash of every setting>.pt`, with its record beside it (same name, `.json`)."""
    blob = json.dumps(_settings(backbone, image_size, seed, config), sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return Path(out_dir) / f"{backbone}-{image_size}px-seed{seed}-{key}.pt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_finished(weights: str | os.PathLike) -> bool:
    """Whether `weights` and its record exist and the record vouches for exactly that file."""
    weights = Path(weights)
    record = weights.with_suffix(".json")
    if not (weights.is_file() and record.is_file()):
        return False
    return read_json(record).get("weights_sha256") == _sha256(weights)


def _check_args(out_dir: str | os.PathLike, backbone: str, image_size: object, seed: object) -> Path:
    from .models.backbones import BACKBONES

    BACKBONES.get(backbone)  # KeyError naming the choices
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or not 16 <= image_size <= 1024:
        raise ValueError(f"image_size: must be an integer in [16, 1024], got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"pretrain out folder {out}: exists and is not a folder")
    return out


def ensure_pretrained(out_dir: str | os.PathLike, backbone: str = "smallcnn",
                      image_size: int = 64, seed: int = 0,
                      config: PretrainConfig = DEFAULT_PRETRAIN,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """The path of a backbone pre-trained on the upstream task with these settings; trained
    (and written) only if no finished file is there yet.

    Returns `weights_path(...)`, a state dict for `build_backbone(backbone, pretrained=PATH)`
    (plus the upstream head as `fc.*`, which that loader ignores). Beside it, a `.json` record:
    the settings, the upstream validation accuracy, the time taken. `progress(step, steps)` is
    called after each training step.
    """
    out = _check_args(out_dir, backbone, image_size, seed)
    image_size, seed = int(image_size), int(seed)
    path = weights_path(out, backbone, image_size, seed, config)
    if is_finished(path):
        return path
    out.mkdir(parents=True, exist_ok=True)
    # Processes that need the same weights (a sweep's launchers) take turns: one trains, the
    # others wait and then find the finished file.
    with ProcessLock(path.with_suffix(".lock"), wait=True, remove=True):
        if is_finished(path):
            return path
        start = time.perf_counter()
        state, stats = train_upstream(backbone, image_size, seed, config, progress)
        save_checkpoint(path, state)  # first the weights; the record, written last, marks them done
        record = {"format": "align-pretrained", **_settings(backbone, image_size, seed, config),
                  "classes": list(config.upstream.classes),
                  "chance": 1 / len(config.upstream.classes),
                  **stats, "seconds": round(time.perf_counter() - start, 1),
                  "align_version": __version__, "torch_version": torch.__version__,
                  "weights": path.name, "weights_sha256": _sha256(path)}
        write_json(path.with_suffix(".json"), record)
    return path


def _to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W], normalised as the benchmark's transforms do."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _loadable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The classifier's weights as `build_backbone(..., pretrained=PATH)` reads them: the
    backbone's own keys (torchvision's names for a ResNet) and the upstream head as `fc.*`."""
    from .models.backbones import TorchvisionResNet

    state = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
    if isinstance(model.backbone, TorchvisionResNet):
        # The loader fills a torchvision net: its stem is conv1 / bn1, and `cam_layer` is only
        # our second name for layer4.
        renames = {"stem.0.": "conv1.", "stem.1.": "bn1."}
        state = {next((new + k[len(old):] for old, new in renames.items() if k.startswith(old)), k): v
                 for k, v in state.items() if not k.startswith("cam_layer.")}
    state.update({f"fc.{k}": v.detach().clone() for k, v in model.head.state_dict().items()})
    return state


@torch.no_grad()
def _accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), 256):
        pred = model(_to_input(images[i:i + 256])).argmax(1).numpy()
        correct += int((pred == labels[i:i + 256]).sum())
    return correct / len(images)


def train_upstream(backbone: str, image_size: int, seed: int, config: PretrainConfig,
                   progress: Callable[[int, int], None] | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict]:
    """Train `backbone` + a linear head on the upstream task, on the CPU, from `seed`.

    Returns (state dict as `_loadable_state` writes it, statistics for the record). The global
    torch RNG and thread count are restored afterwards.
    """
    from .models.backbones import build_backbone
    from .models.classifier import Classifier

    up = config.upstream
    t0 = time.perf_counter()
    train_x, train_y = render_upstream_set(up, seed, 0, up.n_train, image_size)
    val_x, val_y = render_upstream_set(up, seed, up.n_train, up.n_val, image_size)
    render_s = time.perf_counter() - t0

    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Classifier(build_backbone(backbone, pretrained=None, freeze_bn=False),
                               len(up.classes))
        order = torch.Generator().manual_seed(seed)
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                              weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
        perm, pos = torch.randperm(up.n_train, generator=order), 0
        model.train()
        for step in range(1, config.steps + 1):
            if pos + config.batch_size > up.n_train:  # a new epoch, freshly shuffled
                perm, pos = torch.randperm(up.n_train, generator=order), 0
            idx = perm[pos:pos + config.batch_size].numpy()
            pos += config.batch_size
            loss = nn.functional.cross_entropy(model(_to_input(train_x[idx])),
                                               torch.from_numpy(train_y[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress is not None:
                progress(step, config.steps)
        stats = {"upstream_val_accuracy": _accuracy(model, val_x, val_y),
                 "final_train_loss": float(loss.detach()), "render_seconds": round(render_s, 1)}
    finally:
        torch.set_num_threads(threads)
    return _loadable_state(model), stats
