"""Training throughput (images/s) and peak memory of ERM, DRE and ALIGN, per backbone, image size,
precision and memory format, against ERM in float32 measured in the same process.

    python benchmarks/bench_throughput.py                    # CPU: resnet18, 112 px, batch 32
    python benchmarks/bench_throughput.py --backbones smallcnn --sizes 64 --batch 48
    python benchmarks/bench_throughput.py --device cuda --backbones resnet50 --sizes 224 \\
        --batch 96 --precisions fp32,bf16 --channels-last

One iteration is `training.loop.train_step` on a batch of `--batch` random images (3 training
domains, 10 classes); ALIGN's is a post-warm-up one that updates both networks. Every candidate
of a (backbone, size) is timed once per round, rounds interleaved, so a change of machine load
hits all alike; "x ERM" is the median over rounds of the candidate's time over ERM fp32's (its
cost), "x fp32" the same against the candidate's own float32 version (the precision's speed-up).

Peak memory of one iteration, per candidate, above what was held before it (activations,
gradients, temporaries; not the networks and optimiser states): on CUDA from
`max_memory_allocated`; on a CPU from the process's resident set size (Linux: /proc/self/status
VmHWM, reset through /proc/self/clear_refs, after glibc's malloc_trim has returned freed memory,
so that an earlier candidate's freed pages do not hide this one's).
"""

from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from align.algorithms import Batch, build_algorithm  # noqa: E402
from align.training.loop import train_step  # noqa: E402
from align.training.precision import Precision  # noqa: E402
from bench_gradcam import paired_ms  # noqa: E402

ALGORITHMS = ("erm", "dre", "align")


@dataclass(frozen=True)
class Candidate:
    algorithm: str
    backbone: str
    size: int
    precision: str
    channels_last: bool

    @property
    def label(self) -> str:
        return f"{self.algorithm} {self.precision}{' cl' if self.channels_last else ''}"


class Runner:
    """One candidate, built and ready: `step()` runs one training iteration."""

    def __init__(self, c: Candidate, batch_size: int, device: torch.device) -> None:
        torch.manual_seed(0)  # the same initial weights for every precision and format
        hp = {"warmup_steps": 0, "masker_warmup_steps": 0} if c.algorithm == "align" else {}
        fmt = torch.channels_last if c.channels_last else torch.contiguous_format
        self.algo = build_algorithm(c.algorithm, backbone=c.backbone, num_classes=10,
                                    num_domains=3, hparams=hp, pretrained=None,
                                    ).to(device, memory_format=fmt)
        x = torch.randn(batch_size, 3, c.size, c.size, generator=torch.Generator().manual_seed(0))
        self.batch = Batch(x=x.to(device, memory_format=fmt),
                           y=(torch.arange(batch_size) % 10).to(device), n_domains=3)
        self.precision = Precision(c.precision, device)
        self.device = device

    def step(self) -> None:
        train_step(self.algo, self.batch, 1, self.precision)

    def peak_mib(self) -> float:
        """Peak memory (MiB) of one iteration above what was held before it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step()
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - before) / 2**20
        if not Path("/proc/self/clear_refs").exists():
            return float("nan")
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status_mib("VmRSS")
        self.step()
        return _status_mib("VmHWM") - before


def _status_mib(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) / 1024


def candidates(args) -> list[Candidate]:
    formats = (False, True) if args.channels_last else (False,)
    out = []
    for backbone in args.backbones.split(","):
        for size in map(int, args.sizes.split(",")):
            for precision in dict.fromkeys(["fp32", *args.precisions.split(",")]):
                for cl in formats:
                    out += [Candidate(a, backbone, size, precision, cl) for a in ALGORITHMS]
    return out


def measure(group: list[Candidate], args, device: torch.device) -> None:
    """Time every candidate of one (backbone, size), interleaved; print one table."""
    runners = {c: Runner(c, args.batch, device) for c in group}
    times = paired_ms({c: r.step for c, r in runners.items()}, device, args.warmup, args.rounds)
    base = next(c for c in group if c.algorithm == "erm" and c.precision == "fp32"
                and not c.channels_last)
    c0 = group[0]
    print(f"{c0.backbone}, {c0.size} px, batch {args.batch} on {device} "
          f"({torch.get_num_threads()} CPU threads); median of {args.rounds} interleaved rounds")
    print(f"  {'candidate':<16}{'ms/iter':>9}{'images/s':>10}{'x ERM':>7}{'x fp32':>8}"
          f"{'peak MiB':>10}")
    for c, ts in times.items():
        own = Candidate(c.algorithm, c.backbone, c.size, "fp32", c.channels_last)
        cost = statistics.median(t / b for t, b in zip(ts, times[base]))
        speedup = statistics.median(b / t for t, b in zip(ts, times.get(own, ts)))
        peak = runners[c].peak_mib()
        ms = statistics.median(ts)
        print(f"  {c.label:<16}{ms:9.1f}{1000 * args.batch / ms:10.1f}{cost:7.2f}"
              f"{speedup:8.2f}{peak:10.0f}")
    del runners


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", default="resnet18", help="comma-separated")
    ap.add_argument("--sizes", default="112", help="image sizes (px), comma-separated")
    ap.add_argument("--batch", type=int, default=32, help="images per iteration (3 domains)")
    ap.add_argument("--precisions", default="fp32,bf16", help="fp32 is always measured")
    ap.add_argument("--channels-last", action="store_true", help="also in channels-last format")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda requested but CUDA is not available")
    groups: dict[tuple[str, int], list[Candidate]] = {}
    for c in candidates(args):
        groups.setdefault((c.backbone, c.size), []).append(c)
    for group in groups.values():
        measure(group, args, device)


if __name__ == "__main__":
    main()
