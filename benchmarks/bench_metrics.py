"""Benchmark: batched faithfulness metrics vs a per-image, per-fraction loop.

The loop is what a straightforward implementation does: for every image and every fraction, sort
the map, build the mask, perturb and call the model on one image. The batched form sorts each map
once and evaluates all (image, fraction) pairs in one chunked model call. Both give the same
numbers (the max difference is printed).

    python benchmarks/bench_metrics.py [--batch 32] [--size 64] [--width 8] [--repeats 5]

The speed-up comes from amortising per-call overhead (Python, dispatch, oneDNN setup) and from
sorting each map once; it is largest for small models. For a model whose per-image FLOPs dominate
on CPU (e.g. --width 32) both forms do the same arithmetic and the gap narrows.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable

import torch
from torch import nn

from align.metrics import Comprehensiveness, Insertion, Sufficiency, make_substrate


def small_cnn(width: int = 8, num_classes: int = 10) -> nn.Module:
    """Three stride-2 conv layers (width, 2*width, 4*width channels), global pool, linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    ).eval()


def loop_probabilities(
    model, x, saliency, substrate, fractions, keep
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-fraction reference: returns p_clean [B] and p_perturbed [B, F]."""
    b, _, h, w = x.shape
    sub = make_substrate(x, substrate)
    p_clean, p = torch.empty(b), torch.empty(b, len(fractions))
    with torch.no_grad():
        for i in range(b):
            probs = torch.softmax(model(x[i : i + 1]), dim=1)[0]
            target = int(probs.argmax())
            p_clean[i] = probs[target]
            for j, f in enumerate(fractions):
                order = torch.sort(saliency[i].flatten(), descending=True, stable=True).indices
                mask = torch.zeros(h * w, dtype=torch.bool)
                mask[order[: math.floor(f * h * w + 0.5)]] = True
                mask = mask.view(1, 1, h, w)
                xi, si = x[i : i + 1], sub[i : i + 1]
                img = torch.where(mask, xi, si) if keep else torch.where(mask, si, xi)
                p[i, j] = torch.softmax(model(img), dim=1)[0, target]
    return p_clean, p


def loop_metrics(model, x, saliency, substrate, aopc_fractions, insertion_fractions) -> dict:
    out = {}
    for name, keep in (("comprehensiveness", False), ("sufficiency", True)):
        p_clean, p = loop_probabilities(model, x, saliency, substrate, aopc_fractions, keep)
        out[name] = (p_clean[:, None] - p).mean(dim=1)
    _, p = loop_probabilities(model, x, saliency, substrate, insertion_fractions, True)
    out["insertion"] = torch.trapezoid(p, torch.tensor(insertion_fractions), dim=1)
    return out


def batched_metrics(model, x, saliency, substrate) -> dict:
    metrics = {
        "comprehensiveness": Comprehensiveness(substrate=substrate),
        "sufficiency": Sufficiency(substrate=substrate),
        "insertion": Insertion(substrate=substrate, n_steps=20),
    }
    return {name: m(model=model, x=x, saliency=saliency).values for name, m in metrics.items()}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=8, help="channels of the first conv layer")
    parser.add_argument("--substrate", default="blur")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = small_cnn(args.width)
    torch.manual_seed(1)
    x = torch.randn(args.batch, 3, args.size, args.size)
    saliency = torch.rand(args.batch, 1, args.size, args.size)
    aopc = Comprehensiveness().fractions
    ins = Insertion(n_steps=20).fractions

    def run_loop():
        return loop_metrics(model, x, saliency, args.substrate, aopc, ins)

    def run_batched():
        return batched_metrics(model, x, saliency, args.substrate)

    run_loop(), run_batched()  # warm-up (allocator, oneDNN primitive caches)
    # Alternate the two forms so that load from other processes hits both alike; report medians.
    loop_ms, batch_ms = [], []
    for _ in range(args.repeats):
        t, ref = timed(run_loop)
        loop_ms.append(t)
        t, got = timed(run_batched)
        batch_ms.append(t)
    diff = max(float((ref[k] - got[k]).abs().max()) for k in ref)
    ratios = [a / b for a, b in zip(loop_ms, batch_ms)]

    n_calls = args.batch * (3 + 2 * len(aopc) + len(ins))  # 3 clean passes, one per metric
    print(f"batch={args.batch} size={args.size}px width={args.width} threads={args.threads} "
          f"substrate={args.substrate} repeats={args.repeats}")
    print("metrics: comprehensiveness + sufficiency (5 fractions each) + insertion (21 points)")
    print(
        f"per-image, per-fraction loop: {statistics.median(loop_ms):9.1f} ms  "
        f"({n_calls} model calls)"
    )
    print(f"batched:                      {statistics.median(batch_ms):9.1f} ms")
    print(f"speed-up (median of ratios):  {statistics.median(ratios):9.1f}x  "
          f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x)")
    print(f"max |loop - batched|:         {diff:.2e}")


if __name__ == "__main__":
    main()
