"""`align sweep --estimate`: a sweep's device-hours from step times measured on this machine.

    costs = estimate(runs, DataShape(classes=5, images=10_729))   # runs: sweep_grid.expand(...)
    print_estimate(costs, console)

Run on the machine the sweep will train on (a GPU node: `srun --gres=gpu:1 align sweep ...
--estimate`), it answers "how many GPU-hours is this grid?" before any is spent. Nothing is
written and no dataset is read beyond its folder listing.

How: runs that cost the same (one algorithm with the same hyperparameters, training domains and
training settings) form a group; for each group the algorithm is built as the trainer builds it
(`pretrained` weights left out: they change no cost) and fed a random batch of the run's shape
(`batch_size` per training domain, `image_size`, `precision`, `channels_last`, `device`). An
iteration's cost depends on the step only through its kind (`Algorithm.step_kind`: ALIGN's
warm-up, masker-only and alternating iterations differ), so one iteration of each kind is timed
after a warm-up iteration, `repeats` times (the median counts), and weighted by how many of the
run's steps are of that kind. Evaluation: every image of the run's domains once per evaluation
(the trainer evaluates every split of every domain, `eval_every` steps apart and after the last
step), timed on a batch of `eval_batch_size`. Loading: where the data are there, one process
loads a few training batches (decoding, the run's transforms, masks) to give the seconds per
image; without workers loading adds to each step, with W workers a step takes the longer of
computing and a W-th of the loading (ideal scaling: a lower bound). Not counted: checkpoint
writes, start-up and the loader's own overheads, so the figure is a lower bound of the device
time; wall-clock time is it divided by the runs trained at once.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from rich.console import Console

from ..algorithms import ALGORITHMS, Batch, build_algorithm
from ..config import TrainConfig
from ..data.dataset import ImageDataset
from ..data.folder import DomainFolder, scan_domainbed
from ..data.loaders import make_train_loader
from ..data.transforms import build_transform
from ..protocols import make_protocol
from ..training.device import resolve_device, synchronize
from ..training.loop import train_step
from ..training.precision import Precision
from .sweep_grid import GridRun, SweepSpec, expand

#: TrainConfig fields that change what an iteration or an evaluation costs.
COST_KEYS = ("algorithm", "backbone", "freeze_bn", "image_size", "batch_size", "precision",
             "channels_last", "device", "steps", "eval_every", "eval_batch_size")


@dataclass(frozen=True)
class DataShape:
    """What of the dataset a run's cost depends on: its class count, its image count (the
    images of the run's domains, each evaluated once per evaluation) and, where the data are
    there, the scanned folder (its images are decoded to time the input pipeline)."""

    classes: int
    images: int
    folder: DomainFolder | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class GroupCost:
    """The measured cost of one run of a group of runs that cost the same.

    Attributes:
        algorithm: the group's algorithm.
        runs: how many runs of the grid are in the group.
        steps: training steps per run.
        kinds: per step kind, (steps of that kind, seconds per iteration of it).
        evaluations: evaluations per run.
        eval_seconds: seconds per evaluation (every image once).
        device: where it was measured.
        setting: the training settings it was measured with, in words.
        load_seconds: seconds to load one image in one process (decode, transforms, mask), or
            None where the data were not there to time (then loading counts as free).
        workers: the run's `num_workers`: with none, loading adds to each step; with W, W
            processes load while the device computes, and a step takes the longer of the two.
        batch: images per training step.
        images: images per evaluation.
    """

    algorithm: str
    runs: int
    steps: int
    kinds: dict[str, tuple[int, float]]
    evaluations: int
    eval_seconds: float
    device: str
    setting: str
    load_seconds: float | None = None
    workers: int = 0
    batch: int = 1
    images: int = 0

    def paced(self, compute: float, images: int) -> float:
        """Seconds of `compute` that also loads `images`: added without workers, overlapped
        (the slower of the two) with them, each worker loading its share."""
        if self.load_seconds is None:
            return compute
        load = self.load_seconds * images
        return compute + load if self.workers == 0 else max(compute, load / self.workers)

    @property
    def train_seconds(self) -> float:
        """Training time of one run: sum over kinds of steps x seconds per iteration (paced by
        loading where it is the slower)."""
        return sum(n * self.paced(s, self.batch) for n, s in self.kinds.values())

    @property
    def eval_total_seconds(self) -> float:
        """Evaluation time of one run (each evaluation loads its `images`)."""
        return self.evaluations * self.paced(self.eval_seconds, self.images)

    @property
    def run_seconds(self) -> float:
        """Training plus evaluation time of one run."""
        return self.train_seconds + self.eval_total_seconds


def group_key(run: GridRun, n_train_domains: int) -> str:
    """Runs with equal keys cost the same: the cost-relevant settings, the number of training
    domains (the batch holds `batch_size` images of each) and every resolved hyperparameter."""
    cfg = run.config.to_dict()
    return json.dumps({**{k: cfg[k] for k in COST_KEYS}, "train_domains": n_train_domains,
                       "hparams": run.hparams}, sort_keys=True)


def evaluations(config: TrainConfig) -> int:
    """Evaluations of a run, by the trainer's rule (`TrainConfig.evaluates_after`)."""
    return sum(config.evaluates_after(step) for step in range(config.steps))


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls of `fn` after one untimed call (allocation, kernel
    selection), the device synchronised around each."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_loading(config: TrainConfig, folder: DomainFolder, repeats: int = 3) -> float:
    """Seconds to load one training image in one process: the run's transforms (augmentation
    included) and masks where the folder has them, timed over `repeats` batches of
    `batch_size` per domain after one untimed batch."""
    dataset = ImageDataset(folder, build_transform(config.image_size, train=True,
                                                   augment=config.augment),
                           with_masks=folder.masks_root is not None)
    per_domain = [[i for i, s in enumerate(folder.samples) if s.domain == d]
                  for d in range(len(folder.domains))]
    batches = iter(make_train_loader(dataset, per_domain, config.batch_size, config.seed))
    next(batches)
    t0 = time.perf_counter()
    for _ in range(repeats):
        next(batches)
    return (time.perf_counter() - t0) / (repeats * config.batch_size * len(per_domain))


def measure_group(run: GridRun, n_train_domains: int, shape: DataShape, runs: int,
                  repeats: int = 3, seed: int = 0, load: float | None = None) -> GroupCost:
    """Time one run of a group: an iteration of each step kind, and an evaluation batch;
    `load` is the seconds to load an image (`measure_loading`; None: not timed)."""
    cfg = run.config
    device = resolve_device(cfg.device)
    fmt = torch.channels_last if cfg.channels_last else torch.preserve_format
    torch.manual_seed(seed)
    algo = build_algorithm(cfg.algorithm, backbone=cfg.backbone, num_classes=shape.classes,
                           num_domains=n_train_domains, hparams=run.hparams, pretrained=None,
                           freeze_bn=cfg.freeze_bn).to(device, memory_format=fmt)
    precision = Precision(cfg.precision, device)
    needs_masks = ALGORITHMS.get(cfg.algorithm).needs_masks(run.hparams)

    def batch_of(n: int) -> Batch:
        x = torch.randn(n, 3, cfg.image_size, cfg.image_size, device=device)
        mask = torch.rand(n, 1, cfg.image_size, cfg.image_size, device=device).round()
        return Batch(x=x.contiguous(memory_format=fmt),
                     y=torch.randint(shape.classes, (n,), device=device),
                     mask=mask if needs_masks else None, n_domains=n_train_domains)

    batch = batch_of(cfg.batch_size * n_train_domains)
    first: dict[str, int] = {}
    counts: Counter[str] = Counter()
    for step in range(cfg.steps):
        kind = algo.step_kind(step)
        first.setdefault(kind, step)
        counts[kind] += 1
    kinds = {kind: (counts[kind], _timed(lambda: train_step(algo, batch, first[kind], precision),
                                         device, repeats))
             for kind in sorted(first, key=first.get)}
    ev = batch_of(cfg.eval_batch_size)

    @torch.inference_mode()
    def evaluate() -> None:
        algo.eval()
        with precision.autocast():
            algo.predict(ev.x)
            algo.eval_terms(ev.x, ev.mask)

    per_image = _timed(evaluate, device, repeats) / cfg.eval_batch_size
    setting = (f"{cfg.backbone} at {cfg.image_size} px, {cfg.batch_size} x {n_train_domains} "
               f"images per step, {cfg.precision}" + (", channels-last" if cfg.channels_last else ""))
    return GroupCost(cfg.algorithm, runs, cfg.steps, kinds, evaluations(cfg),
                     per_image * shape.images, str(device), setting, load, cfg.num_workers,
                     cfg.batch_size * n_train_domains, shape.images)


def estimate(runs: Iterable[GridRun], shape: DataShape, domains: tuple[str, ...],
             repeats: int = 3, console: Console | None = None) -> list[GroupCost]:
    """The cost of every group of `runs` (in grid order), each measured once."""
    groups: dict[str, list[GridRun]] = {}
    sizes: dict[str, int] = {}
    for run in runs:
        cfg = run.config
        n = len(make_protocol(cfg.protocol, list(domains), cfg.test_domains,
                              cfg.train_domains).train_domains)
        key = group_key(run, n)
        groups.setdefault(key, []).append(run)
        sizes[key] = n
    # The input pipeline is timed once (it does not depend on the algorithm), with the first
    # run's transforms; runs of one sweep share image size and augmentation.
    first = next(iter(groups.values()))[0].config
    load = None if shape.folder is None else measure_loading(first, shape.folder, repeats)
    costs = []
    for i, (key, members) in enumerate(groups.items(), 1):
        if console is not None:
            console.print(f"timing {i}/{len(groups)}: {members[0].point.algorithm}, "
                          f"{sizes[key]} training domain(s) ({len(members)} runs)",
                          highlight=False)
        costs.append(measure_group(members[0], sizes[key], shape, len(members), repeats,
                                   load=load))
    return costs


def print_estimate(costs: list[GroupCost], console: Console) -> None:
    """One line per algorithm (runs, time per iteration of each kind, hours per run and in
    all), then the total."""
    by_algo: dict[str, list[GroupCost]] = {}
    for c in costs:
        by_algo.setdefault(c.algorithm, []).append(c)
    devices = sorted({c.device for c in costs})
    settings = "; ".join(dict.fromkeys(c.setting for c in costs))
    console.print(f"measured on {', '.join(devices)} ({torch.get_num_threads()} CPU threads): "
                  f"{settings}", highlight=False, markup=False)
    loads = [c for c in costs if c.load_seconds is not None]
    if loads:
        c = loads[0]
        console.print(f"input pipeline: {1e3 * c.load_seconds:.2f} ms per image in one process, "
                      f"{c.workers} worker(s); a step takes the longer of loading and computing "
                      "(the two add up without workers)", highlight=False)
    total = train = 0.0
    for algo, groups in by_algo.items():
        runs = sum(g.runs for g in groups)
        hours = sum(g.runs * g.run_seconds for g in groups) / 3600
        train += sum(g.runs * g.train_seconds for g in groups) / 3600
        total += hours
        g = groups[0]
        kinds = "; ".join(f"{kind}: {1e3 * s:.1f} ms x {n}" for kind, (n, s) in g.kinds.items())
        console.print(f"  {algo:10} {runs:4d} runs  {hours / runs:8.3f} h/run  {hours:9.2f} h  "
                      f"(compute {kinds}; {g.evaluations} evaluations x {g.eval_seconds:.1f} s)",
                      highlight=False, markup=False)
    n = sum(c.runs for c in costs)
    loading = "loading included" if len(loads) == len(costs) else \
        "data loading not included (no data to time)"
    console.print(f"total: {n} runs, {total:.2f} device-hours ({train:.2f} training, "
                  f"{total - train:.2f} evaluation); {loading}; checkpoints and start-up not "
                  "included", highlight=False)


def data_shape(spec: SweepSpec, regime: str | None = None) -> DataShape:
    """Classes and images of the sweep's data: its folder listed (images not decoded), or, for a
    synthetic benchmark not made yet, the regime's generation settings."""
    root = Path(spec.settings["data"])
    if regime is not None and not root.is_dir():
        from ..regimes import REGIMES

        synth = REGIMES.get(regime).synth_config
        return DataShape(len(synth.classes), synth.n_per_domain * len(synth.domains))
    masks = spec.settings.get("masks")
    folder = scan_domainbed(root, masks_root=masks, preset=spec.settings.get("dataset"),
                            domains=spec.settings.get("domains"), verify_images=False)
    return DataShape(len(folder.classes), len(folder.samples), folder)


def estimate_sweep(spec: SweepSpec, root: Path, regime: str | None = None,
                   console: Console | None = None, repeats: int = 3,
                   shape: DataShape | None = None) -> list[GroupCost]:
    """`align sweep --estimate`: expand and check the grid, time its groups, print the
    estimate; nothing is written. `shape` replaces the data's (`data_shape`), e.g. a release's
    image count for a stand-in folder (`benchmarks/sweep_estimate.py`)."""
    console = console or Console()
    runs = expand(spec, Path(root))
    costs = estimate(runs, shape or data_shape(spec, regime), spec.domains, repeats, console)
    print_estimate(costs, console)
    return costs
