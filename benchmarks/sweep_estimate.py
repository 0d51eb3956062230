"""Device-hours of the shipped sweeps (configs/*.yaml), measured on this machine without the data.

    python benchmarks/sweep_estimate.py --device cuda            # part of benchmarks/gpu_check.sh
    python benchmarks/sweep_estimate.py --device cpu --tiny      # smoke test (tests/test_benchmarks.py)

`align sweep --config ... --estimate` needs the dataset's folder. This script stands in a folder
with the preset's domain and class folders (one tiny image and mask each) and gives the estimate
the image count of the dataset's first known release (VLCS 10,729; TerraIncognita 24,788), which
is all of the data an estimate uses (the evaluations' size); the step times are measured with each
config's own settings (ResNet-50, 224 px, ...). `--tiny` replaces those settings with a small CNN
at 32 px and 4 steps, to check the script, not to measure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from rich.console import Console  # noqa: E402

from align.data.presets import get_preset  # noqa: E402
from align.experiments.sweep_cost import DataShape, estimate_sweep  # noqa: E402
from align.experiments.sweep_run import SweepInputs, sweep_spec  # noqa: E402

TINY = {"backbone": "smallcnn", "pretrained": None, "image_size": 32, "batch_size": 2,
        "eval_batch_size": 8, "steps": 4, "hparams": {"align.warmup_steps": 1,
                                                      "align.masker_warmup_steps": 1}}


def stand_in(root: Path, dataset: str) -> tuple[Path, Path]:
    """A folder (and a masks folder) with the preset's domains and classes, one image each."""
    preset = get_preset(dataset)
    for d in preset.domains:
        for c in preset.classes:
            for top, array in ((root / "images", np.zeros((8, 8, 3), np.uint8)),
                               (root / "masks", np.full((8, 8), 255, np.uint8))):
                (top / d / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(top / d / c / "0.png")
    return root / "images", root / "masks"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--configs", nargs="+", type=Path, default=sorted((ROOT / "configs").glob("*.yaml")))
    ap.add_argument("--repeats", type=int, default=2, help="timed iterations per step kind")
    ap.add_argument("--tiny", action="store_true", help="small CNN, 32 px, 4 steps (smoke test)")
    args = ap.parse_args()
    console = Console(soft_wrap=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(args.configs):
            config = yaml.safe_load(path.read_text())
            dataset = config["dataset"]
            if args.tiny:
                config = {**config, **TINY}
            work = Path(tmp) / str(i)
            data, masks = stand_in(work / "data", dataset)
            (work / "sweep.yaml").write_text(yaml.safe_dump(config))
            inputs = SweepInputs(out=work / "out", data=data, masks=masks,
                                 config=work / "sweep.yaml", device=args.device)
            images = get_preset(dataset).releases[0].total
            console.print(f"== {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
                          f"({dataset}, {images} images)", highlight=False)
            estimate_sweep(sweep_spec(inputs, console, make=False), work / "out", None, console,
                           args.repeats, DataShape(len(get_preset(dataset).classes), images))


if __name__ == "__main__":
    main()
