"""RES (Gao et al., "RES: A Robust Framework for Guiding Visual Explanation", KDD 2022; public code
`YuyangGao/RES`), registered twice: `res_g` (Gaussian imputation) and `res_l` (learned imputation).

    L     = CE(f(x), y) + guide_weight * (L_rob + L_imp)
    L_rob = ReLU( mean_{annotated pixels} |tanh(5 (CAM - a)) - label| - eta )   (one hinge per batch)
    L_imp = mean_{annotated samples, pixels} |CAM - M~|

CAM: the label's Grad-CAM at the last block, min-max normalised (no ReLU, as RES's code).
label: +1 on relevant, -1 on irrelevant, 0 on unannotated pixels (RES: positive minus
"counterfactual" annotation, resized to the CAM's grid). Our masks are full segmentations, so
every pixel is annotated: label = +1 where the mask, area-resized to the CAM's grid, is >= 0.5, and
-1 elsewhere. Samples with an empty mask are left out of both terms.

M~, the imputed mask, is where the two variants differ:

- RES-G (`res_g`): the positive label blurred with OpenCV's 3x3 Gaussian (sigma 0) and divided by
  its maximum (RES code, `transforms == 'Gaussian'`). A fixed transform: nothing is learned.
- RES-L (`res_l`): one strided convolution of the full-resolution binary mask, min-max normalised
  (RES code, `transforms == 'S1'`: `Conv2d(1, 1, 64, stride=32, padding=16)` from 224 px to the 7x7
  CAM). It is trained jointly with the classifier (its parameters are in the classifier phase's
  optimiser) through L_imp, which pulls the CAM and the imputed mask towards each other.

Departures (see docs/baselines.md): the threshold `a` is fixed (RES's argparse default 0.75; its
training loop instead solves `a` per batch by a brute-force search, `BF_solver`); RES-L's
convolution keeps RES's geometry in units of CAM cells (kernel 2 cells, stride 1 cell, padding half
a cell) on the mask area-resized to 4 x 4 sub-pixels per cell, so it fits any backbone and image
size (RES: 32 x 32 pixels per cell at 224 px); RES's optional L2 tie of M~ to the label (`--reg`,
default 0) is left out.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

from ..explain.gradcam import normalize_cam
from ..hparams import HParam
from ..losses import binomial_blur3, has_annotation, masked_mean, normalize_by_max, resize_mask
from .base import ALGORITHMS
from .mask_guided import MaskGuided

#: RES-L's imputation conv works on the mask resized to this many sub-pixels per CAM cell.
SUBCELLS = 4


def res_labels(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks [B, 1, H, W] in [0, 1] -> labels [B, 1, h, w] in {-1, +1} at the CAM's grid."""
    inside = resize_mask(mask, size) >= 0.5
    return inside.to(mask.dtype) * 2 - 1


def res_robust_loss(cam: torch.Tensor, label: torch.Tensor, a: float, eta: float,
                    sample_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """RES's robust explanation loss and its un-hinged mean.

    Args:
        cam: maps [B, 1, h, w] in [0, 1].
        label: [B, 1, h, w], +1 relevant / -1 irrelevant / 0 unannotated (left out).
        a: threshold of the tanh surrogate of the step function 1[cam > a].
        eta: slack of the hinge.
        sample_weight: optional [B] 0/1 weights (0 leaves a sample out).

    Returns:
        (ReLU(mean - eta), mean), the mean of |tanh(5 (cam - a)) - label| over annotated pixels.
    """
    per_pixel = (torch.tanh(5 * (cam - a)) - label).abs()
    weight = (label != 0).to(cam.dtype)
    if sample_weight is not None:
        weight = weight * sample_weight.view(-1, 1, 1, 1)
    mean = masked_mean(per_pixel, weight)
    return F.relu(mean - eta), mean


class RES(MaskGuided):
    """CE plus RES's robust loss and its imputed-mask L1; subclasses give the imputation."""

    HPARAMS = {
        **MaskGuided.HPARAMS,
        "a": HParam(0.75, "RES code (argparse default of --a; its loop solves a per batch)",
                    "threshold of tanh(5 (CAM - a))", ("uniform", 0.5, 0.9)),
        "eta": HParam(0.1, "RES examples (README; argparse default 0.0)",
                      "slack of the hinge ReLU(L - eta)", ("choice", [0.0, 0.05, 0.1, 0.2])),
    }

    @abc.abstractmethod
    def imputed(self, mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """M~ [B, 1, h, w]: the imputed mask at the CAM's grid `label.shape[-2:]`, from masks
        [B, 1, H, W] in [0, 1] and their labels `res_labels` [B, 1, h, w]."""

    def explanation(self, cam: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hp = self.hparams
        annotated = has_annotation(mask)
        label = res_labels(mask, tuple(cam.shape[-2:]))
        robust, robust_mean = res_robust_loss(cam, label, hp["a"], hp["eta"], annotated)
        imputed = self.imputed(mask, label)
        imp = masked_mean((cam - imputed).abs(), annotated.view(-1, 1, 1, 1))
        return robust + imp, {"exp_robust": robust, "exp_robust_mean": robust_mean.detach(),
                              "exp_imputed": imp}


@ALGORITHMS.register("res_g")
class RESG(RES):
    """RES-G: RES with the Gaussian-blurred mask as the imputed target."""

    def imputed(self, mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return normalize_by_max(binomial_blur3((label > 0).to(label.dtype)))


@ALGORITHMS.register("res_l")
class RESL(RES):
    """RES-L: RES with a learned strided-convolution imputation of the mask."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.imputer = nn.Conv2d(1, 1, 2 * SUBCELLS, stride=SUBCELLS, padding=SUBCELLS // 2)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        # RES-L's imputer trains jointly with the classifier, in the same phase and optimiser.
        params = list(self.classifier.parameters()) + list(self.imputer.parameters())
        return {"classifier": torch.optim.Adam(params, lr=self.hparams["lr"],
                                               weight_decay=self.hparams["weight_decay"])}

    def imputed(self, mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h, w = label.shape[-2:]
        binary = (mask >= 0.5).to(mask.dtype)
        out = self.imputer(resize_mask(binary, (SUBCELLS * h, SUBCELLS * w)))
        return normalize_cam(out)
