"""Cost of one training iteration of DRE and ALIGN relative to ERM's, measured in one process.

    python benchmarks/bench_steps.py                       # resnet18, 112 px, batch 32 (CPU)
    python benchmarks/bench_steps.py --backbone smallcnn --size 64 --batch 48

An ALIGN iteration here is a post-warm-up one that updates both networks (masker phase, then
classifier phase). Targets (issue #3): ALIGN <= 4x ERM (floor ~4x: the masker phase costs two
extra classifier passes, the mixup term one), DRE <= 2.2x (floor ~2x). Timings are medians over
interleaved rounds, so a change in machine load hits every candidate alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from align.algorithms import Batch, build_algorithm  # noqa: E402
from align.training.loop import train_step  # noqa: E402


def make(name: str, backbone: str, device: torch.device):
    hp = {"warmup_steps": 0, "masker_warmup_steps": 0} if name == "align" else {}
    return build_algorithm(name, backbone=backbone, num_classes=10, num_domains=3,
                           hparams=hp, pretrained=None).to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    algos = {n: make(n, args.backbone, dev) for n in ("erm", "dre", "align")}
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    y = torch.arange(args.batch, device=dev) % 10
    batch = Batch(x=x, y=y, n_domains=3)
    times: dict[str, list[float]] = {n: [] for n in algos}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, algo in algos.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            train_step(algo, batch, step=1)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times[name].append(time.perf_counter() - t)
    erm = statistics.median(times["erm"])
    print(f"{args.backbone}, batch {args.batch} at {args.size} px on {dev} "
          f"({torch.get_num_threads()} threads); median of {args.rounds} interleaved rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:6s} {1000 * med:8.1f} ms/iteration   {med / erm:5.2f}x ERM")
    print(f"phases of one ALIGN iteration: {list(algos['align'].phases(1))}")


if __name__ == "__main__":
    main()
