"""The example images an evaluation saves for the report's figures (examples.npz).

The report draws only from files (it loads no network), so `align evaluate` keeps, for the first
split it scores (the first held-out domain under lodo), `n_examples` of that split's scored images
with what the evaluation made of them: the saliency maps its metrics scored, the prediction, the
algorithm's learned mask (ALIGN's masker) and the ground truth. The rows are taken from the scored
batches themselves, so the figure shows exactly the maps that were scored and costs no second
explanation. Which images: round-robin over classes in a seeded order of the scored images, so
every run with the same split and evaluation size shows the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import io
from .rundir import Examples, examples_entry, sha256

#: Seed of the example images' order (see the module docstring).
EXAMPLES_SEED = 0


def pick_examples(samples: list[tuple[int, str, str]], n: int) -> list[int]:
    """Up to n of `samples` ((dataset index, relative path, class name)): their indices,
    round-robin over the classes (sorted) in a seeded order of the paths."""
    ordered = sorted(samples, key=lambda s: s[1])
    ordered = [ordered[i] for i in np.random.RandomState(EXAMPLES_SEED).permutation(len(ordered))]
    by_class: dict[str, list[int]] = {}
    for index, _, cls in ordered:
        by_class.setdefault(cls, []).append(index)
    queues = [by_class[c] for c in sorted(by_class)]
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return picked


class ExampleCollector:
    """Collects the picked images' rows from the scored batches of one split.

    Args:
        split: the split key.
        picked: dataset indices to keep, in display order (`pick_examples`).
        folder: the run's DomainFolder (paths and class names).
        masker: the algorithm's masker network (x [B, 3, H, W] -> [B, 1, H, W]), or None.
    """

    def __init__(self, split: str, picked: list[int], folder, masker) -> None:
        self.split, self.picked, self.folder, self.masker = split, picked, folder, masker
        self.rows: dict[int, dict[str, np.ndarray]] = {}

    def add(self, raw: dict, pred: torch.Tensor, saliency: torch.Tensor) -> None:
        """One scored batch: raw (the loader's dict: x [B, 3, H, W], index [B], mask), the
        predicted classes [B] and the scored saliency maps [B, 1, H, W]."""
        from .data.transforms import denormalize

        want = set(self.picked)
        rows = [i for i, d in enumerate(raw["index"].tolist()) if d in want]
        if not rows:
            return
        x = raw["x"][rows]
        image = (denormalize(x).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        masked = None
        if self.masker is not None:
            with torch.no_grad():
                masked = self.masker(x.to(next(self.masker.parameters()).device))[:, 0]
        for k, r in enumerate(rows):
            index = int(raw["index"][r])
            row = {"image": image[k].numpy(), "pred": int(pred[r]),
                   "saliency": saliency[r, 0].detach().float().cpu().numpy().astype(np.float16)}
            if masked is not None:
                row["masker"] = masked[k].float().cpu().numpy().astype(np.float16)
            if "mask" in raw:
                row["gt"] = (raw["mask"][r, 0] > 0.5).numpy().astype(np.uint8)
            self.rows[index] = row

    def result(self) -> Examples:
        """The collected rows in display order (every picked image must have been scored)."""
        rows = [self.rows[i] for i in self.picked]
        classes, samples = self.folder.classes, self.folder.samples

        def stack(key):
            return np.stack([r[key] for r in rows]) if rows and key in rows[0] else None

        return Examples(
            split=self.split,
            paths=np.array([samples[i].path for i in self.picked], dtype=str),
            labels=np.array([classes[samples[i].label] for i in self.picked], dtype=str),
            predictions=np.array([classes[r["pred"]] for r in rows], dtype=str),
            images=stack("image"), saliency=stack("saliency"), masker=stack("masker"),
            gt=stack("gt"))


def write_examples(path: Path, name: str, examples: Examples) -> dict:
    """Write `examples` to `path` (atomically); returns evaluation.json's entry for a file
    called `name` (the final name: a partial file is renamed to it at the end)."""
    data = examples.to_bytes()
    io.write_bytes(path, data)
    return examples_entry(name, examples, data)


def intact(path: Path, entry: dict | None) -> bool:
    """Whether `path` is the examples file that `entry` (evaluation.json's record) vouches for."""
    return entry is not None and path.is_file() and sha256(path.read_bytes()) == entry["sha256"]
