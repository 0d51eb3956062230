"""Cost of one training iteration of DRE and ALIGN relative to ERM's, measured in one process.

    python benchmarks/bench_steps.py                       # resnet18, 112 px, batch 32 (CPU)
    python benchmarks/bench_steps.py --backbone smallcnn --size 64 --batch 48

An ALIGN iteration here is a post-warm-up one that updates both networks (masker phase, then
classifier phase). Targets (issues #3 and #13): ALIGN <= 4x ERM, DRE <= 2.2x. Floors in
multiply-adds (`--flops` counts them): DRE ~2x (a clean and a mixed pass, each with its backward);
ALIGN ~3.3x plus its masker (the masker phase runs the frozen classifier forward and back to the
input on the kept and the removed images, 2 x 2 batch-passes against ERM's ~3). Timings are
interleaved round by round and each ratio is the median over rounds of the per-round ratio, so a
change in machine load hits every candidate alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from align.algorithms import Batch, build_algorithm  # noqa: E402
from align.training.loop import train_step  # noqa: E402
from bench_gradcam import paired_ms, ratio  # noqa: E402


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
    ap.add_argument("--flops", action="store_true", help="also count multiply-adds per iteration")
    ap.add_argument("--profile", action="store_true",
                    help="also profile ALIGN's iterations (torch.profiler): time per part")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    algos = {n: make(n, args.backbone, dev) for n in ("erm", "dre", "align")}
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    y = torch.arange(args.batch, device=dev) % 10
    batch = Batch(x=x, y=y, n_domains=3)
    steps = {n: (lambda a=a: train_step(a, batch, step=1)) for n, a in algos.items()}
    times = paired_ms(steps, dev, warmup=1, rounds=args.rounds)
    print(f"{args.backbone}, batch {args.batch} at {args.size} px on {dev} "
          f"({torch.get_num_threads()} threads); median of {args.rounds} interleaved rounds")
    for name, ts in times.items():
        print(f"  {name:6s} {statistics.median(ts):8.1f} ms/iteration   "
              f"{ratio(times, name, 'erm'):5.2f}x ERM")
    if args.flops:
        macs = {}
        for name, fn in steps.items():
            with FlopCounterMode(display=False) as counter:
                fn()
            macs[name] = counter.get_total_flops() / 2
        print("  multiply-adds per iteration: " + ", ".join(
            f"{n} {m / 1e9:.2f} G ({m / macs['erm']:.2f}x)" for n, m in macs.items()))
    print(f"phases of one ALIGN iteration: {list(algos['align'].phases(1))}")
    if args.profile:
        profile_align(algos["align"], batch, args.rounds)


def profile_align(algo, batch: Batch, rounds: int) -> None:
    """Where an ALIGN iteration's time goes: each phase's forward (losses) and backward, and the
    optimiser steps, as `train_step` runs them; then the most expensive operators."""
    from torch.profiler import ProfilerActivity, profile, record_function

    def iteration() -> None:
        opts = algo.optimizers()
        for phase in algo.phases(1):
            with record_function(f"## {phase}: forward and losses"):
                loss = algo.losses(phase, batch, 1)["loss"]
            for opt in opts.values():
                opt.zero_grad(set_to_none=True)
            with record_function(f"## {phase}: backward"):
                loss.backward()
            with record_function(f"## {phase}: optimiser step"):
                opts[phase].step()

    iteration()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            iteration()
    events = prof.key_averages()
    parts = [e for e in events if e.key.startswith("## ")]
    total = sum(e.cpu_time_total for e in parts)
    print(f"ALIGN iteration, profiled over {rounds} iterations (torch.profiler, CPU time):")
    for e in sorted(parts, key=lambda e: e.key):
        print(f"  {e.key[3:]:<34}{e.cpu_time_total / rounds / 1e3:8.1f} ms "
              f"{100 * e.cpu_time_total / total:5.1f}%")
    print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))


if __name__ == "__main__":
    main()
