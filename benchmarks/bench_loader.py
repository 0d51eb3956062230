"""The input pipeline alone (images/s delivered by the training loader) against the training step.

    python benchmarks/bench_loader.py                         # 224 px, default workers, CPU step
    python benchmarks/bench_loader.py --device cuda --backbone resnet50 --precision bf16

The loader is the training loop's own: `make_train_loader` over an `ImageDataset` of JPEG files
(decoding, DomainBed's augmentation at `--size` px, normalisation, collation, pinned memory on
CUDA), with `--workers` processes (default: `TrainConfig`'s `num_workers`). The images are
written once to a temporary folder (3 domains x 2 classes, `--source-size` px JPEGs of smooth
random colour fields, like photographs in file size and decoding cost) and read back from the
page cache. The training step is ERM's `train_step` on random images of the same size and batch,
on `--device`; a ratio above 1 means the data keep up with training (the GPU target: >= 1.5x).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from align.algorithms import Batch, build_algorithm  # noqa: E402
from align.config import TrainConfig  # noqa: E402
from align.data.dataset import ImageDataset  # noqa: E402
from align.data.folder import scan_domainbed  # noqa: E402
from align.data.loaders import make_train_loader  # noqa: E402
from align.data.transforms import build_transform  # noqa: E402
from align.training.loop import train_step  # noqa: E402
from align.training.precision import Precision  # noqa: E402


def write_images(root: Path, per_class: int, size: int) -> None:
    """3 domains x 2 classes x `per_class` JPEGs (quality 90) of `size` x 3/4 `size` px."""
    rng = np.random.default_rng(0)
    for d in range(3):
        for c in range(2):
            folder = root / f"domain{d}" / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
                image = Image.fromarray(coarse).resize((size, size * 3 // 4), Image.BICUBIC)
                image.save(folder / f"{i}.jpg", quality=90)


def loader_images_per_s(root: Path, args) -> float:
    folder = scan_domainbed(root, verify_images=False)
    dataset = ImageDataset(folder, build_transform(args.size, train=True, augment=True),
                           with_masks=False)
    domains = [[i for i, s in enumerate(folder.samples) if s.domain == d] for d in range(3)]
    loader = make_train_loader(dataset, domains, args.batch // 3, seed=0,
                               num_workers=args.workers,
                               pin_memory=torch.device(args.device).type == "cuda")
    batches = iter(loader)
    for _ in range(args.warmup_batches):  # worker start-up and the first prefetched batches
        next(batches)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(batches)
    return args.batches * 3 * (args.batch // 3) / (time.perf_counter() - start)


def step_images_per_s(args) -> float:
    device = torch.device(args.device)
    torch.manual_seed(0)
    algo = build_algorithm("erm", backbone=args.backbone, num_classes=2, num_domains=3,
                           pretrained=None).to(device)
    n = 3 * (args.batch // 3)
    batch = Batch(x=torch.randn(n, 3, args.size, args.size, device=device),
                  y=(torch.arange(n) % 2).to(device), n_domains=3)
    precision = Precision(args.precision, device)
    times = []
    for r in range(args.rounds + 1):  # round 0 warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        train_step(algo, batch, 1, precision)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if r:
            times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224, help="training image size (px)")
    ap.add_argument("--source-size", type=int, default=500, help="JPEG width (px)")
    ap.add_argument("--batch", type=int, default=96, help="images per step (3 domains)")
    ap.add_argument("--workers", type=int, default=TrainConfig().num_workers)
    ap.add_argument("--batches", type=int, default=10, help="timed batches")
    ap.add_argument("--warmup-batches", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=64, help="JPEGs per domain and class")
    ap.add_argument("--backbone", default="resnet50", help="of the training step")
    ap.add_argument("--precision", default="fp32", help="of the training step")
    ap.add_argument("--device", default="cpu", help="of the training step")
    ap.add_argument("--rounds", type=int, default=3, help="timed training steps")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda requested but CUDA is not available")
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), args.per_class, args.source_size)
        loader = loader_images_per_s(Path(tmp), args)
    step = step_images_per_s(args)
    print(f"input pipeline: {args.workers} workers, {args.source_size} px JPEGs -> {args.size} px "
          f"(DomainBed augmentation), batches of {3 * (args.batch // 3)}")
    print(f"  loader        {loader:8.1f} images/s")
    print(f"  training step {step:8.1f} images/s (ERM, {args.backbone}, {args.precision}, "
          f"{args.device}, {torch.get_num_threads()} CPU threads)")
    print(f"  loader / step = {loader / step:.2f}x")


if __name__ == "__main__":
    main()
