"""Speed of the batched Grad-CAM against a per-sample loop and against Captum's LayerGradCam.

All three timings are taken in the same process, on the same model, input and targets, so the
printed ratios are comparable even where absolute times are not (shared CI machines).

    python benchmarks/bench_gradcam.py                      # CPU, resnet18, batch 32 at 112 px
    python benchmarks/bench_gradcam.py --device cuda --batch 128 --size 224

Reading the output:

* "per-sample loop / batched": what batching saves, against our own function called on one
  image at a time (the strict baseline: every other trick is shared). On a CPU a convolution's
  cost grows about linearly with the batch, so only the small-batch inefficiency is saved (about
  2-4x on two cores); on a GPU, where batch-1 calls are bound by kernel launches, the gap should
  be larger.
* "bare forward": the same ratio for a bare forward pass without autograd, for reference. It is
  what batching saves on the forward pass itself, which dominates a Grad-CAM call; the strict
  ratio above can be a little higher only because batching also amortises Grad-CAM's per-call
  overhead (hooks, one autograd call).
* "textbook loop / batched": against Grad-CAM as per-image code usually writes it (forward hook,
  ``retain_grad`` on the activation, ``model.zero_grad(); score.backward()`` per image), which
  back-propagates through the whole network and fills every parameter's ``.grad`` only to read
  one activation gradient.
* "captum / ours" >= ~1: both run one forward pass and back-propagate only through the head
  after the layer, so time is dominated by the forward pass. Ours runs the trunk before the
  layer without autograd recording (see `gradcam`), which the last lines show as activation
  memory kept for backward, and which makes it slightly faster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torchvision.models import resnet18, resnet50

try:
    from align.explain.gradcam import gradcam
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from align.explain.gradcam import gradcam


def _sync(device: torch.device) -> None:
    # CUDA kernels are asynchronous: without a sync the timer would stop before they finish.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_ms(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, rounds: int
) -> dict[str, list[float]]:
    """Wall times (ms) of each function, called in turn within every round.

    Interleaving the candidates round by round, instead of timing one after the other, exposes
    them to the same machine drift (other jobs, clocks), and the per-round ratios cancel it.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def ratio(times: dict[str, list[float]], slow: str, fast: str) -> float:
    """Median over rounds of ``slow / fast``."""
    return statistics.median(s / f for s, f in zip(times[slow], times[fast]))


def autograd_saved_mib(fn: Callable[[], object], model: torch.nn.Module) -> float:
    """MiB of activations autograd saves for backward during ``fn()`` (deduplicated).

    Parameters saved by the layers are left out: they exist anyway. This is the memory a
    Grad-CAM call holds on top of the model, whatever the device.
    """
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in params:
            seen[t.data_ptr()] = max(seen.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values()) / 2**20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "resnet50", "smallcnn"], default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=112, help="input height and width (px)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--no-captum", action="store_true", help="skip the Captum comparison")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.model == "smallcnn":  # the quickstart's classifier (10 classes)
        from align.models import Classifier, build_backbone

        model = Classifier(build_backbone("smallcnn"), 10)
    else:
        model = {"resnet18": resnet18, "resnet50": resnet50}[args.model](weights=None)
    model = model.to(device).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    n_classes = 10 if args.model == "smallcnn" else 1000
    target = torch.randint(0, n_classes, (args.batch,), device=device)
    layer = model.cam_layer if args.model == "smallcnn" else model.layer4

    def ours() -> torch.Tensor:
        return gradcam(model, layer, x, target, normalize=False)

    def per_sample() -> list[torch.Tensor]:
        return [
            gradcam(model, layer, x[i : i + 1], target[i : i + 1], normalize=False)
            for i in range(args.batch)
        ]

    def textbook() -> list[torch.Tensor]:
        maps = []
        for i in range(args.batch):
            store: list[torch.Tensor] = []
            handle = layer.register_forward_hook(lambda mod, inp, out: store.append(out))
            try:
                logits = model(x[i : i + 1])
            finally:
                handle.remove()
            acts = store[0]
            acts.retain_grad()
            model.zero_grad(set_to_none=True)
            logits[0, target[i]].backward()
            weights = acts.grad.mean(dim=(2, 3), keepdim=True)
            maps.append(torch.relu((weights * acts).sum(dim=1, keepdim=True)).detach())
        model.zero_grad(set_to_none=True)
        return maps

    @torch.no_grad()
    def forward_batched() -> torch.Tensor:
        return model(x)

    @torch.no_grad()
    def forward_per_sample() -> list[torch.Tensor]:
        return [model(x[i : i + 1]) for i in range(args.batch)]

    fns: dict[str, Callable[[], object]] = {
        "ours, batched": ours,
        "ours, per-sample loop": per_sample,
        "textbook per-sample loop": textbook,
        "bare forward, batched": forward_batched,
        "bare forward, per-sample": forward_per_sample,
    }
    if not args.no_captum:
        from captum.attr import LayerGradCam

        captum_gc = LayerGradCam(model, layer)

        def captum() -> torch.Tensor:
            return captum_gc.attribute(x, target, relu_attributions=True)

        fns["captum LayerGradCam"] = captum
        # Same numbers first, so that the timing compares like with like.
        diff = (ours() - captum()).abs().max().item()

    print(
        f"{args.model}, batch {args.batch} at {args.size} px on {device} "
        f"({torch.get_num_threads()} CPU threads); median of {args.rounds} interleaved rounds "
        f"after {args.warmup} warm-up"
    )
    times = paired_ms(fns, device, args.warmup, args.rounds)
    for name, ts in times.items():
        print(f"  {name:<24}{statistics.median(ts):9.1f} ms")
    # The textbook loop must compute the same maps, or its timing means nothing.
    textbook_diff = (torch.cat(textbook()) - ours()).abs().max().item()
    loop_ratio = ratio(times, "ours, per-sample loop", "ours, batched")
    bare = ratio(times, "bare forward, per-sample", "bare forward, batched")
    print(f"  per-sample loop / batched = {loop_ratio:.2f}x   (bare forward alone: {bare:.2f}x)")
    textbook_ratio = ratio(times, "textbook per-sample loop", "ours, batched")
    print(
        f"  textbook loop / batched   = {textbook_ratio:.2f}x"
        f"   (max |textbook - ours| = {textbook_diff:.2e})"
    )
    if not args.no_captum:
        captum_ratio = ratio(times, "captum LayerGradCam", "ours, batched")
        print(
            f"  captum / ours             = {captum_ratio:.2f}x"
            f"   (max |ours - captum| = {diff:.2e})"
        )
    for name in ("ours, batched", "captum LayerGradCam"):
        if name in fns:
            saved = autograd_saved_mib(fns[name], model)
            print(f"  activations kept for backward, {name:<20}{saved:8.2f} MiB")
    if device.type == "cuda":
        for name, fn in fns.items():
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
            print(f"  peak CUDA memory, {name:<24}{peak_mib:8.0f} MiB")


if __name__ == "__main__":
    main()
