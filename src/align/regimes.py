"""The synthetic benchmark's regimes: which shortcut, and where the backbone starts.

The paper fine-tunes an ImageNet-pretrained ResNet-50 on natural images whose shortcuts are mostly
backgrounds (TerraIncognita: camera locations). At CPU scale the synthetic benchmark has both
axes (issue 12, item 6):

| regime                | shortcut                                  | backbone                               |
|-----------------------|-------------------------------------------|----------------------------------------|
| square-scratch        | a saturated cue square (2% of the image)  | small CNN from scratch                  |
| square-pretrained     | the same                                  | small CNN pre-trained upstream          |
| background-scratch    | the background tinted by the cue colour   | small CNN from scratch                  |
| background-pretrained | the same                                  | small CNN pre-trained upstream          |

"Pre-trained upstream" is `align pretrain`'s stand-in for ImageNet (`align.pretrain`: 12 shape
classes disjoint from the benchmark's, no cue), one weights file (seed 0) for every run, as one
ImageNet checkpoint serves every DomainBed run. Fine-tuning freezes BatchNorm, as DomainBed and
DRE do with ImageNet ResNets. Everything else, the learning rate included, is the same in every
regime, so the columns differ only in the shortcut and the initialisation. These settings were
fixed before any method was compared on them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from .data.synthetic import DEFAULT_CONFIG, SynthConfig
from .registry import Registry

REGIMES: Registry = Registry("regime")

#: Seed of the one upstream-pretrained weights file every run of a pretrained regime starts from.
PRETRAIN_SEED = 0


@dataclass(frozen=True)
class Regime:
    """One cell of {square, background} x {scratch, pretrained}."""

    name: str
    cue_kind: str  # SynthConfig.cue_kind
    pretrained: bool

    @property
    def synth_config(self) -> SynthConfig:
        return dataclasses.replace(DEFAULT_CONFIG, cue_kind=self.cue_kind)

    def train_settings(self, pretrained_dir: Path, backbone: str, image_size: int,
                       console: Console | None = None, make: bool = True) -> dict:
        """TrainConfig fields of this regime: the pretrained weights file (made and cached in
        `pretrained_dir` on first use, unless `make` is false) and frozen BatchNorm, or nothing
        from scratch."""
        if not self.pretrained:
            return {"pretrained": None}
        from .pretrain import ensure_pretrained, weights_path

        if not make:
            return {"pretrained": str(weights_path(pretrained_dir, backbone, image_size,
                                                   PRETRAIN_SEED)), "freeze_bn": True}
        if console is not None and not _cached(pretrained_dir, backbone, image_size):
            console.print(f"pre-training the {backbone} stand-in for ImageNet in "
                          f"{pretrained_dir} (once; about 2 minutes on 2 cores) ...")
        path = ensure_pretrained(pretrained_dir, backbone=backbone, image_size=image_size,
                                 seed=PRETRAIN_SEED)
        return {"pretrained": str(path), "freeze_bn": True}


def _cached(pretrained_dir: Path, backbone: str, image_size: int) -> bool:
    from .pretrain import is_finished, weights_path

    return is_finished(weights_path(pretrained_dir, backbone, image_size, PRETRAIN_SEED))


for _name, _cue, _pre in (("square-scratch", "square", False),
                          ("square-pretrained", "square", True),
                          ("background-scratch", "background", False),
                          ("background-pretrained", "background", True)):
    REGIMES.register(_name)(Regime(_name, _cue, _pre))
