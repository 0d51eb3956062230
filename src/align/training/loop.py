"""The training loop: data, protocol, algorithm, evaluation, checkpoints, resume.

Read top to bottom, `Trainer.run` is the whole story (nanoGPT-style): build everything from the
config, restore the last checkpoint if there is one, then for every step fetch a domain-balanced
batch, let the algorithm name its phases and loss terms, back-propagate and step each phase's
optimiser, and every `eval_every` steps evaluate every split, checkpoint atomically and append one
line to `results.jsonl`.

Determinism: the data stream is a pure function of (seed, step) (`data.loaders`) and the
checkpoint holds the RNG state and the fp16 loss scale, so a resumed run repeats an uninterrupted
one exactly on the CPU. Speed: `training.precision` and `training.device`; each record holds
`images_per_s` since the previous evaluation and `peak_memory_mib` (CUDA's peak, or peak RSS).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .. import io
from ..algorithms import ALGORITHMS, Algorithm, Batch, build_algorithm
from ..config import TrainConfig, check_run
from ..data.dataset import ImageDataset
from ..data.folder import DomainFolder, scan_domainbed
from ..data.loaders import make_eval_loader, make_train_loader
from ..data.splits import make_splits, split_indices, splits_from_record, splits_record
from ..data.transforms import build_transform
from ..errors import ConfigError, UserError
from ..seeding import seed_hash
from ..protocols import Protocol, make_protocol
from ..rundir import RunDirError
from .device import peak_memory, reset_peak_memory, resolve_device, synchronize
from .logs import TensorBoardLog
from .precision import Precision
from .rundir import RunDir, RunLock, environment
from .selection import SELECTION_METHODS, summarize


#: Version of last.pt's layout (1: adds the evaluation records and the best step).
CHECKPOINT_FORMAT = 1


class NonFiniteLoss(UserError, RuntimeError):
    """A loss term became NaN or infinite; training stops before any update or checkpoint."""


def add_val_split(splits: dict, seed: int, fraction: float) -> dict:
    """In-distribution protocol: carve `val` out of each domain's `in` (the rest is `train`)."""
    out = {}
    for d, s in splits.items():
        keep, val = split_indices(len(s["in"]), fraction, seed_hash(seed, d, "val"))
        out[d] = {**s, "train": [s["in"][i] for i in keep], "val": [s["in"][i] for i in val]}
    return out


def train_step(algo: Algorithm, batch: Batch, step: int,
               precision: Precision | None = None) -> dict[str, torch.Tensor]:
    """One iteration: every phase the algorithm names, each with its backward and its optimiser's
    step. Returns the detached loss terms (classifier terms plain, other phases prefixed).

    Each phase's forward passes and losses run under `precision`'s autocast (None: float32); its
    backward and step outside it, scaled for fp16, the scale adjusted once per iteration.
    A non-finite term stops training before the update, naming the term, phase and step.
    """
    precision = precision or Precision("fp32", batch.x.device)
    opts, logged = algo.optimizers(), {}
    algo.train()
    for phase in algo.phases(step):
        with precision.autocast():
            terms = algo.losses(phase, batch, step)
        values = torch.stack([t.detach().float() for t in terms.values()])
        if not bool(torch.isfinite(values).all()):  # one device sync per phase
            bad = [k for k, t in terms.items() if not torch.isfinite(t).all()]
            raise NonFiniteLoss(
                f"step {step}: loss term(s) {', '.join(bad)} of phase {phase!r} are not "
                "finite; stopping before the update (no checkpoint written from this state)"
            )
        for opt in opts.values():
            opt.zero_grad(set_to_none=True)
        precision.backward(terms["loss"])
        precision.step(opts[phase])
        # Classifier terms keep plain names ("ce"); other phases are prefixed ("masker/dist").
        prefix = "" if phase == "classifier" else f"{phase}/"
        logged.update({prefix + k: t.detach() for k, t in terms.items()})
    precision.update()
    return logged


@dataclass
class Progress:
    """Callbacks the loop reports to (the CLI draws a progress bar with them)."""

    on_step: Callable[[int, dict], None] = lambda step, terms: None
    on_eval: Callable[[dict], None] = lambda record: None


class Trainer:
    """Builds a run from a `TrainConfig` and trains it (resuming if the run directory has one)."""

    def __init__(self, config: TrainConfig, progress: Progress | None = None) -> None:
        self.objective_start = check_run(config)
        self.config = config
        self.progress = progress or Progress()
        self.run_dir = RunDir(config.out)
        self.run_dir.check_writable()
        self.events = TensorBoardLog(self.run_dir / "tensorboard" if config.tensorboard else None)
        # Data are validated before anything is written, so bad input leaves no run behind.
        self.folder: DomainFolder = scan_domainbed(
            config.data, masks_root=config.masks, preset=config.dataset, domains=config.domains,
            skip_bad_images=config.skip_bad_images, verify_images=config.verify_images,
        )
        # Evaluation-only masks (e.g. cues) are matched now, so a bad folder fails before writing.
        self.eval_mask_folders = {
            name: self.folder.with_masks(root, verify=config.verify_images)
            for name, root in config.eval_masks.items()
        }
        self.protocol: Protocol = make_protocol(
            config.protocol, self.folder.domains, config.test_domains, config.train_domains
        )
        self.device = resolve_device(config.device)
        # Asked once (check_run refused a run without masks): the algorithms then rely on every
        # batch having masks.
        needs_masks = ALGORITHMS.get(config.algorithm).needs_masks(config.hparams)
        if needs_masks and len(self.folder.empty_masks) == len(self.folder.samples):
            # Every mask empty: the explanation loss would be 0 and the run plain ERM, silently.
            raise ConfigError(
                f"algorithm {config.algorithm!r} learns from masks, but every mask under "
                f"{self.folder.masks_root} is empty (no pixel on); check that the masks folder "
                "is the right one and that masks are saved on a 0..255 scale")
        torch.manual_seed(config.seed)
        self.memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        self.algorithm: Algorithm = build_algorithm(
            config.algorithm, backbone=config.backbone, num_classes=len(self.folder.classes),
            num_domains=len(self.protocol.train_domains), hparams=config.hparams,
            pretrained=config.pretrained, freeze_bn=config.freeze_bn,
        ).to(self.device, memory_format=self.memory_format)
        self.precision = Precision(config.precision, self.device)
        self.resolved = {**config.to_dict(), "hparams": self.algorithm.hparams}
        self._inspect(tolerate_writer=True)

    # ------------------------------------------------------------------ setup
    def _inspect(self, tolerate_writer: bool) -> None:
        """Whether the run directory holds this run to resume (`resuming`), and its splits. With
        `tolerate_writer`, a folder that another process is writing (half-written, locked) is
        left undecided (`resuming` None) and looked at again under the lock, in `run`."""
        try:
            self.resuming = self.run_dir.check_compatible(self.resolved,
                                                          defaults=TrainConfig().to_dict())
            self.splits = self._load_or_make_splits()
        except (FileExistsError, RunDirError):
            if not (tolerate_writer and self.run_dir.busy()):
                raise
            self.resuming = None

    def _load_or_make_splits(self) -> dict:
        cfg = self.config
        rd = self.run_dir  # killed while writing its setup files: nothing trained, splits remade
        if self.resuming and ((rd / "splits.json").exists() or rd.last_ckpt.exists()):
            splits = splits_from_record(self.folder, rd.read_json("splits.json"))
        else:
            splits = make_splits(self.folder, cfg.holdout_fraction, cfg.seed)
        if self.protocol.spec.carves_val:
            splits = add_val_split(splits, cfg.seed, cfg.holdout_fraction)
        return splits

    def _write_run_files(self) -> None:
        rd = self.run_dir
        rd.path.mkdir(parents=True, exist_ok=True)
        rd.write_json("config.json", self.resolved)
        rd.write_json("env.json", environment(self.device))
        rd.write_json("dataset.json", self.folder.to_json())
        rd.write_json("protocol.json", self.protocol.to_json())
        base = {d: {k: s[k] for k in ("in", "out")} for d, s in self.splits.items()}
        rd.write_json("splits.json", splits_record(self.folder, base))

    def _loaders(self, start_step: int):
        cfg, masks = self.config, self.folder.masks_root is not None
        train_ds = ImageDataset(self.folder, build_transform(cfg.image_size, train=True, augment=cfg.augment), with_masks=masks)
        eval_ds = ImageDataset(self.folder, build_transform(cfg.image_size, train=False),
                               with_masks=masks, extra_masks=self.eval_mask_folders)
        split = self.protocol.train_split
        train_idx = [self.splits[d][split] for d in self.protocol.train_domains]
        # Pinned host memory lets the copies to the GPU overlap with computation (non_blocking).
        pin = self.device.type == "cuda"
        train = make_train_loader(train_ds, train_idx, cfg.batch_size, cfg.seed, start_step,
                                  cfg.num_workers, pin_memory=pin)
        # Every sample of a domain lies in exactly one of its splits, so one sequential pass over
        # the evaluated samples serves every split; `key_of` maps a sample to its split's key.
        self.eval_keys = [f"{d}_{s}" for d, s in self.protocol.eval_splits()]
        key_of = torch.full((len(self.folder.samples),), -1, dtype=torch.long)
        for k, (d, s) in enumerate(self.protocol.eval_splits()):
            key_of[self.splits[d][s]] = k
        self.key_of = key_of
        evaluated = torch.nonzero(key_of >= 0).flatten().tolist()
        return train, make_eval_loader(eval_ds, evaluated, cfg.eval_batch_size, cfg.num_workers,
                                       pin_memory=pin)

    # ------------------------------------------------------------------ steps
    def _to_batch(self, raw: dict) -> Batch:
        dev, mask = self.device, raw.get("mask")
        return Batch(
            x=raw["x"].to(dev, non_blocking=True, memory_format=self.memory_format),
            y=raw["y"].to(dev, non_blocking=True),
            mask=None if mask is None else mask.to(dev, non_blocking=True),
            n_domains=len(self.protocol.train_domains),
        )

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        return train_step(self.algorithm, batch, step, self.precision)

    @torch.inference_mode()  # no gradient needed (no Grad-CAM here)
    def evaluate(self, loader) -> dict[str, dict]:
        """Per evaluated split: accuracy ("acc"), mean cross-entropy ("ce"), sample count ("n"),
        and the algorithm's extra scores ("eval", per score name). Keyed as in `results.jsonl`."""
        self.algorithm.eval()
        n_keys = len(self.eval_keys)
        correct = torch.zeros(n_keys, dtype=torch.float64)
        ce_sum = torch.zeros(n_keys, dtype=torch.float64)
        count = torch.zeros(n_keys, dtype=torch.float64)
        extra_sum: dict[str, torch.Tensor] = {}
        extra_cnt: dict[str, torch.Tensor] = {}
        for raw in loader:
            x = raw["x"].to(self.device, non_blocking=True, memory_format=self.memory_format)
            mask = raw.get("mask")
            mask = None if mask is None else mask.to(self.device, non_blocking=True)
            keys = self.key_of[raw["index"]]
            logits = self.algorithm.predict(x)
            pred = logits.argmax(1).cpu()
            correct += torch.bincount(keys, (pred == raw["y"]).double(), n_keys)
            ce = F.cross_entropy(logits.float(), raw["y"].to(logits.device), reduction="none")
            ce_sum += torch.bincount(keys, ce.double().cpu(), n_keys)
            count += torch.bincount(keys, minlength=n_keys).double()
            scored = dict(self.algorithm.eval_terms(x, mask))
            for set_name in self.eval_mask_folders:  # the same scores against other masks
                other = raw[f"mask@{set_name}"].to(self.device, non_blocking=True)
                scored.update({f"{k}@{set_name}": v
                               for k, v in self.algorithm.eval_terms(x, other).items()})
            for name, vals in scored.items():
                vals = vals.detach().double().cpu()
                ok = torch.isfinite(vals)  # NaN marks "no score" (e.g. an empty mask)
                extra_sum.setdefault(name, torch.zeros(n_keys, dtype=torch.float64))
                extra_cnt.setdefault(name, torch.zeros(n_keys, dtype=torch.float64))
                extra_sum[name] += torch.bincount(keys[ok], vals[ok], n_keys)
                extra_cnt[name] += torch.bincount(keys[ok], minlength=n_keys).double()
        seen = [(i, k) for i, k in enumerate(self.eval_keys) if count[i] > 0]
        extra = {
            name: {k: float(extra_sum[name][i] / extra_cnt[name][i])
                   for i, k in enumerate(self.eval_keys) if extra_cnt[name][i] > 0}
            for name in extra_sum
        }
        return {"acc": {k: float(correct[i] / count[i]) for i, k in seen},
                "ce": {k: float(ce_sum[i] / count[i]) for i, k in seen},
                "n": {k: int(count[i]) for i, k in seen}, "eval": extra}

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, step: int, best_val: float | None, best_step: int | None,
                    records: list[dict]) -> None:
        """last.pt: everything needed to resume, and the evaluation records so far, which are
        the truth `results.jsonl` is rewritten from on resume (a kill between the record's append
        and this write, or a deleted results.jsonl, then loses nothing)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "algorithm": self.algorithm.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.algorithm.optimizers().items()},
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "loss_scale": self.precision.state_dict(),  # fp16's GradScaler; empty otherwise
            "best_val": best_val,
            "best_step": best_step,
            "records": records,
        }
        io.save_checkpoint(self.run_dir.last_ckpt, state)

    def _restore(self, state: dict | None) -> tuple[int, float | None, int | None, list[dict]]:
        """Resume from the last checkpoint's `state`, if any: (start step, best score of the
        selection criterion so far or None, its step, records).

        The checkpoint is the truth: results.jsonl is rewritten from its records (older
        checkpoints without them: records newer than the checkpoint are dropped), and a best.pt
        that a kill left behind the checkpoint's best step is rewritten from the checkpoint.
        """
        rd = self.run_dir
        if state is None:
            return 0, None, None, rd.truncate_results(-1)
        self.algorithm.load_state_dict(state["algorithm"])
        for k, opt in self.algorithm.optimizers().items():
            opt.load_state_dict(state["optimizers"][k])
        self.precision.load_state_dict(state.get("loss_scale", {}))
        torch.set_rng_state(state["rng_cpu"].cpu())
        if state["rng_cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
        if "records" in state:
            records = list(state["records"])
            io.write_text(rd.results, "".join(json.dumps(r) + "\n" for r in records))
        else:
            records = rd.truncate_results(state["step"])
        best_step = state.get("best_step")
        if best_step is not None and best_step == state["step"] and (
                not rd.best_ckpt.exists() or io.load_checkpoint(rd.best_ckpt)["step"] != best_step):
            io.save_checkpoint(rd.best_ckpt, {"step": best_step, "algorithm": state["algorithm"]})
        return state["step"], state["best_val"], best_step, records

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict:
        """Train to `config.steps`, evaluating every `eval_every` steps; return the summary. An OS
        lock (`RunLock`) held from the first write to the end makes one process per run."""
        rd = self.run_dir
        rd.path.mkdir(parents=True, exist_ok=True)
        with RunLock(rd.path), self.events:
            if not self.resuming:  # another process may have trained here since __init__ looked
                self._inspect(tolerate_writer=False)
            return self._run_locked()

    def _run_locked(self) -> dict:
        cfg, rd = self.config, self.run_dir
        for folder in (rd.path, rd.last_ckpt.parent):  # a killed process's half-written files
            io.remove_temporaries(folder)
        if self.resuming and rd.is_done() and rd.read_json("summary.json").get("steps") == cfg.steps:
            return rd.read_json("summary.json")
        state = io.load_checkpoint(rd.last_ckpt, map_location=self.device) \
            if self.resuming and rd.last_ckpt.exists() else None
        if state is not None and state.get("format", 0) > CHECKPOINT_FORMAT:
            raise io.CheckpointError(
                f"{rd.last_ckpt} was written by a newer align (checkpoint format "
                f"{state['format']}, this version reads up to {CHECKPOINT_FORMAT}); upgrade align "
                "to resume this run")
        if state is not None and state["step"] > cfg.steps:
            raise ConfigError(
                f"{rd.path} has trained {state['step']} steps; --steps {cfg.steps} is fewer and "
                f"would report a run it is not. Use --steps {state['step']} or more, or another --out")
        self._write_run_files()
        (rd.path / "done").unlink(missing_ok=True)  # training further (more steps): not done yet
        start, best_val, best_step, records = self._restore(state)
        self.events.open(start)
        criterion = SELECTION_METHODS.get(cfg.selection)
        train_loader, eval_loader = self._loaders(start)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        reset_peak_memory(self.device)
        images, t0 = 0, time.time()
        batches = iter(train_loader)
        for step in range(start, cfg.steps):
            batch = self._to_batch(next(batches))
            terms = self.train_step(batch, step)
            images += len(batch.y)
            for k, v in terms.items():  # summed on the device; read back once per evaluation
                sums[k] = sums.get(k, 0) + v
                counts[k] = counts.get(k, 0) + 1
            self.progress.on_step(step, terms)
            if cfg.evaluates_after(step):
                synchronize(self.device)
                train_seconds = time.time() - t0
                with self.precision.autocast():
                    ev = self.evaluate(eval_loader)
                memory, memory_kind = peak_memory(self.device)
                record = {
                    "step": step + 1,
                    "losses": {k: float(v) / counts[k] for k, v in sums.items()},
                    "acc": ev["acc"], "ce": ev["ce"], "n": ev["n"], "eval": ev["eval"],
                    "seconds": round(time.time() - t0, 3),
                    "images_per_s": round(images / max(train_seconds, 1e-9), 2),
                    "peak_memory_mib": round(memory, 1), "peak_memory": memory_kind,
                }
                # best.pt follows the configured criterion (accuracy: higher; val_loss: lower)
                # and agrees with selection.summarize: warm-up checkpoints are no candidates.
                score = criterion.score(record, self.protocol.val_keys())
                improved = (step + 1 > self.objective_start and score is not None
                            and criterion.better(score, best_val))
                if improved:
                    best_val, best_step = score, step + 1
                # Order: the record (and its TensorBoard events), then last.pt (which holds every
                # record), then best.pt. A kill anywhere in between resumes from last.pt, which
                # restores the other two (and purges the events after it, `TensorBoardLog.open`).
                io.append_jsonl(rd.results, record)
                self.events.write(record)
                records.append(record)
                self._checkpoint(step + 1, best_val, best_step, records)
                if improved:
                    io.save_checkpoint(rd.best_ckpt, {"step": step + 1,
                                                      "algorithm": self.algorithm.state_dict()})
                self.progress.on_eval(record)
                reset_peak_memory(self.device)
                sums, counts, images, t0 = {}, {}, 0, time.time()
        summary = {"steps": cfg.steps,
                   **summarize(records, self.protocol.to_json(), self.objective_start)}
        rd.write_json("summary.json", summary)
        rd.mark_done()
        return summary


def train(config: TrainConfig, progress: Progress | None = None) -> dict:
    """Train (or resume) the run described by `config`; return its summary."""
    return Trainer(config, progress).run()
