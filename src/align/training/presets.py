"""Named training presets: a paper's training settings as one name (`align train --preset dre`).

A preset is a partial `TrainConfig`, each value with its source. Precedence:
defaults < preset < config file < CLI flags / keyword overrides (`config.make_config`); `hparams`
merge key by key. The run's `config.json` records the preset's name. (Other registries of
presets: dataset layouts in `align.data.presets`, evaluation protocols in
`align.evaluation_presets`.)

`dre` and `align` carry DRE's `dre/train.py` (github.com/tangli-udel/DRE), checked line by line:

- ResNet-50 with torchvision's `IMAGENET1K_V2` weights (`dre/networks.py`; our "imagenet" is
  torchvision's default, the same V2 weights), BatchNorm frozen (`ResNet.freeze_bn`), dropout 0;
- 224 px (`RandomResizedCrop(224, scale=(0.7, 1.0))`, flip, `ColorJitter(0.3, 0.3, 0.3, 0.3)`,
  `RandomGrayscale`: DomainBed's augmentation);
- 16 images per training domain per step (`--batch_size 16`, one loader per domain, concatenated);
- Adam, lr 5e-5, no weight decay; 5,000 steps; validation every 200 steps on a 20% split of each
  training domain (`dre/datasets.py: split_valid(valid_ratio=0.2)`);
- the kept checkpoint has the lowest size-weighted validation cross-entropy (`best_val_model.pth`).

Not carried over (DRE's code, our loop): its `ReduceLROnPlateau` (patience 100 checks; never fires
in 25 checks); its validation and test images go through the training augmentation (`make_dataset`
gets `augment_transform` for every split; ours are resized only); it samples with replacement
(`RandomSampler(replacement=True)`); it evaluates after updates 1, 201, ..., 4801 (`step % 200 == 0`
after the update) where we evaluate after updates 200, 400, ..., 5000; its validation split is
seeded with 0 whatever the run's seed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

from ..registry import Registry


@dataclass(frozen=True)
class Preset:
    """A named partial training configuration.

    Args:
        name: the registry key (`--preset NAME`).
        fields: TrainConfig field -> (value, source); `hparams` is one field (a mapping).
        help: one line for the CLI and the docs.
    """

    name: str
    fields: Mapping[str, tuple[Any, str]]
    help: str = ""

    def values(self) -> dict[str, Any]:
        """The preset's TrainConfig values (a deep copy: callers may change them)."""
        return {k: copy.deepcopy(v) for k, (v, _) in self.fields.items()}


PRESETS: Registry[Preset] = Registry("training preset")

_DRE_TRAIN = "DRE code (dre/train.py)"

#: DRE's training settings; every field of `dre/train.py` that our TrainConfig has.
DRE_TRAINING: dict[str, tuple[Any, str]] = {
    "backbone": ("resnet50", "DRE code (dre/networks.py: torchvision resnet50)"),
    "pretrained": ("imagenet", "DRE code (dre/networks.py: ResNet50_Weights.IMAGENET1K_V2)"),
    "freeze_bn": (True, "DRE code (dre/networks.py: ResNet.freeze_bn)"),
    "image_size": (224, "DRE code (dre/train.py: RandomResizedCrop(224), Resize((224, 224)))"),
    "augment": (True, "DRE code (dre/train.py: augment_transform, DomainBed's)"),
    "batch_size": (16, "DRE code (dre/train.py: --batch_size 16, per training domain)"),
    "steps": (5000, "DRE code (dre/train.py: steps = 5000)"),
    "eval_every": (200, "DRE code (dre/train.py: check_freq = 200)"),
    "holdout_fraction": (0.2, "DRE code (dre/datasets.py: valid_ratio=0.2)"),
    "selection": ("val_loss", "DRE code (dre/train.py: best_val_model.pth at the lowest val_loss)"),
    "hparams": ({"lr": 5e-5, "weight_decay": 0.0, "dropout": 0.0},
                "DRE code (dre/train.py: Adam(lr=5e-5), no weight decay; networks.py: Dropout(0))"),
}


def register(name: str, help: str, **fields: tuple[Any, str]) -> Preset:
    preset = Preset(name, fields, help)
    PRESETS.register(name)(preset)
    return preset


register("dre", "DRE's training (dre/train.py): ResNet-50, 224 px, 16 per domain, 5,000 steps, "
         "val_loss selection", algorithm=("dre", _DRE_TRAIN), **DRE_TRAINING)
register("align", "ALIGN with DRE's training settings (ALIGN = DRE + guidance; the paper's "
         "'without explanation guidance' row is DRE's)",
         algorithm=("align", "paper"), **DRE_TRAINING)
