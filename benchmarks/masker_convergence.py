"""The masker alone against a fixed classifier that reads only a known region (no annotation).

    python benchmarks/masker_convergence.py --lr 1e-2 --init-bias -2 --steps 150

The classifier's logits are +-6 x the mean of channel 0 over the top-left quadrant of the image;
everything else is noise it ignores. The masker (ALIGN's, its other defaults) is trained on L_mask
alone, batches of 48 at 64 px (the quickstart's), and every 25 steps this prints the dist term,
the mask's mean inside and outside the quadrant and its IoU with the quadrant (threshold 0.5).
docs/align.md's table of masker learning rates and initial biases comes from this script.
"""

from __future__ import annotations

import argparse

import torch

from align.algorithms import Batch, build_algorithm
from align.training.loop import train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--init-bias", type=float, default=-2.0)
    ap.add_argument("--width", type=int, default=8, help="masker_width")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--every", type=int, default=25)
    args = ap.parse_args()
    torch.set_num_threads(1)
    size, n = args.size, args.batch
    region = torch.zeros(size, size, dtype=torch.bool)
    region[: size // 2, : size // 2] = True

    class RegionClassifier(torch.nn.Module):
        def forward(self, x):
            s = 6.0 * x[:, 0][:, region].mean(dim=1)
            return torch.stack([-s, s, torch.zeros_like(s)], dim=1)

    torch.manual_seed(0)
    algo = build_algorithm("align", backbone="smallcnn", num_classes=3, num_domains=1, hparams={
        "warmup_steps": 0, "masker_warmup_steps": 10**9, "masker_lr": args.lr,
        "masker_init_bias": args.init_bias, "masker_width": args.width})
    algo.optimizers()  # built before the swap: only the masker's optimiser is stepped
    algo.classifier = RegionClassifier()
    g = torch.Generator().manual_seed(0)
    print("step  dist   inside outside IoU")
    for step in range(args.steps):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 3, size, size, generator=g)
        x[:, :, region] = (2.0 * y - 1.0)[:, None, None] + 0.3 * x[:, :, region]
        terms = train_step(algo, Batch(x=x, y=y), step)
        if (step + 1) % args.every == 0:
            with torch.no_grad():
                m = algo.masker(x)[:, 0]
            pred = m > 0.5
            iou = ((pred & region).sum((1, 2)).float() / (pred | region).sum((1, 2)).float()).mean()
            print(f"{step + 1:4d}  {terms['masker/dist'].item():.3f}  {m[:, region].mean():.3f}  "
                  f"{m[:, ~region].mean():.3f}  {iou:.3f}", flush=True)


if __name__ == "__main__":
    main()
