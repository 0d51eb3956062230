"""A map-style dataset over a `DomainFolder`, with per-sample seeded augmentation.

``dataset[i]`` augments with whatever state torch's global generator is in (plain PyTorch
behaviour). ``dataset[(i, aug_seed)]`` instead seeds a private fork of the CPU generator with
`aug_seed`, so the augmented tensors are a pure function of (i, aug_seed): the same in any worker
process, on resume, and whatever else consumed random numbers before. `StepBatchSampler` in
`align.data.loaders` produces such keys.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from PIL import Image
from torch.utils.data import Dataset

from align.data.folder import DataError, DomainFolder, load_mask, load_rgb
from align.data.transforms import JointTransform


class ImageDataset(Dataset):
    """Items are dicts of tensors.

    Returns (per item):
        x: float32 [3, H, W], normalised image.
        y: int64 scalar, class index into `folder.classes`.
        domain: int64 scalar, domain index into `folder.domains`.
        index: int64 scalar, sample index into `folder.samples`.
        mask: float32 [1, H, W] in [0, 1]; only when `with_masks`.
        mask@NAME: float32 [1, H, W] in [0, 1] for each folder of `extra_masks` (e.g. the
            synthetic benchmark's cue masks scored at evaluation), transformed exactly as `mask`.
    """

    def __init__(
        self, folder: DomainFolder, transform: JointTransform, *, with_masks: bool,
        extra_masks: Mapping[str, DomainFolder] | None = None,
    ) -> None:
        if with_masks:
            if folder.masks_root is None:
                raise DataError(
                    f"{folder.root}: with_masks=True but the folder was scanned without masks_root"
                )
            unmatched = [s.path for s in folder.samples if s.mask_path is None]
            if unmatched:
                raise DataError(
                    f"{folder.root}: {len(unmatched)} image(s) have no mask, e.g. {unmatched[0]}"
                )
        self.folder = folder
        self.transform = transform
        self.with_masks = with_masks
        self.extra_masks = dict(extra_masks or {})
        for name, other in self.extra_masks.items():
            if [x.path for x in other.samples] != [x.path for x in folder.samples]:
                raise DataError(f"extra masks {name!r} ({other.masks_root}) were matched to "
                                f"other images than {folder.root}")

    def __len__(self) -> int:
        return len(self.folder.samples)

    def _parse_key(self, key: Any) -> tuple[int, int | None]:
        """int -> (index, None); (index, aug_seed) -> (index, aug_seed)."""
        if isinstance(key, (tuple, list)):
            if len(key) != 2:
                raise TypeError(f"dataset key must be an index or (index, aug_seed), got {key!r}")
            index, seed = operator.index(key[0]), operator.index(key[1])
        else:
            index, seed = operator.index(key), None
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        return index, seed

    @staticmethod
    def _decode(loader: Callable[[Path], Image.Image], path: Path, what: str) -> Image.Image:
        try:
            return loader(path)
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - any decoder failure: report which file
            raise DataError(f"{path}: cannot load {what} ({type(e).__name__}: {e})") from e

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        index, aug_seed = self._parse_key(key)
        sample = self.folder.samples[index]
        image_path = self.folder.image_path(index)
        image = self._decode(load_rgb, image_path, "image")
        mask = None
        if self.with_masks:
            mask_path = self.folder.mask_file(index)
            assert mask_path is not None  # checked in __init__
            mask = self._decode(load_mask, mask_path, "mask")
        x, m = self._transform(image, mask, aug_seed, image_path)
        extra = {}
        for name, other in self.extra_masks.items():
            other_mask = self._decode(load_mask, other.mask_file(index), f"mask {name!r}")
            # Same image, same seed: the same geometric draws, so this mask stays aligned.
            extra[f"mask@{name}"] = self._transform(image, other_mask, aug_seed, image_path)[1]
        item = {
            "x": x,
            "y": torch.tensor(sample.label, dtype=torch.int64),
            "domain": torch.tensor(sample.domain, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self.with_masks:
            item["mask"] = m
        item.update(extra)
        return item

    def _transform(self, image: Image.Image, mask: Image.Image | None, aug_seed: int | None,
                   image_path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
        try:
            if aug_seed is None:
                return self.transform(image, mask)
            # Only the CPU generator is forked: seeding via torch.manual_seed would also reseed
            # (and so disturb) every CUDA generator, which fork_rng(devices=[]) leaves unrestored.
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(aug_seed % 2**63)
                return self.transform(image, mask)
        except DataError as e:
            raise DataError(f"{image_path}: {e}") from None
