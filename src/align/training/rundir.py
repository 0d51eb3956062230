"""The run directory contract.

    RUN/
      config.json      resolved TrainConfig (+ resolved algorithm hyperparameters)
      env.json         library versions, device, git commit of align's source, command line
      dataset.json     domains, classes, counts, skipped files
      protocol.json    train/test domains, selection and test keys
      splits.json      every domain's split as relative file paths (auditable, reproducible)
      results.jsonl    one line per evaluation: step, mean loss terms, accuracy, mean cross-entropy
                       and sample count per split, extras
      tensorboard/     the same as TensorBoard events (config `tensorboard: true`; training.logs)
      checkpoints/last.pt   everything needed to resume (networks, optimisers, RNG, step)
      checkpoints/best.pt   weights chosen by the config's `selection` (training-domain validation
                            by default; `val_loss`: lowest validation cross-entropy)
      summary.json     per selection method: chosen step, validation and test accuracy (and
                       validation loss where recorded)
      done             written last
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from .. import __version__, io
from ..errors import UserError
from ..rundir import RunFiles

#: The lock file of a run directory (see `RunLock`); not part of the run's results.
LOCK_NAME = ".lock"


class RunLocked(UserError, RuntimeError):
    """Another live process is training in this run directory."""


def RunLock(run_dir: str | Path) -> io.ProcessLock:
    """The lock of a run directory, `RUN/.lock`: one training process per run (see
    `io.ProcessLock`); `RunLocked` names the holder's PID."""
    run_dir = Path(run_dir)
    return io.ProcessLock(
        run_dir / LOCK_NAME, error=RunLocked,
        busy=f"{run_dir} is being trained by another process (PID {{pid}}); wait for it to "
             "finish or stop it, or choose another --out")


# Keys that may change between a run and its resumption without changing its results (beyond
# float rounding: another device or memory format computes the same functions).
RESUMABLE_KEYS = {"steps", "num_workers", "device", "eval_batch_size", "verify_images", "out",
                  "tensorboard", "channels_last"}


class RunDir(RunFiles):
    """The training loop's side of a run directory: `RunFiles`' reader plus the writes."""

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoint("last")

    @property
    def best_ckpt(self) -> Path:
        return self.checkpoint("best")

    @property
    def results(self) -> Path:
        return self.path / "results.jsonl"

    # ---- lifecycle
    def check_writable(self) -> None:
        """Refuse, before anything is written, an --out that is a file or that this user cannot
        create or write (ValueError naming it)."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise ValueError(f"--out {p} is a file, not a folder; choose another --out")
        existing = p
        while not existing.exists():  # the nearest folder that exists is where mkdir writes
            existing = existing.parent
        if not existing.is_dir():  # --out a_file/run: mkdir would fail, and not for permissions
            raise ValueError(f"--out {p}: {existing} is a file, not a folder; choose another --out")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write to {existing} (permission denied); choose another --out")

    def check_compatible(self, config: dict, defaults: dict | None = None) -> bool:
        """True if this is an existing run of the same config (to resume); error if it differs.

        A key that the old config.json lacks (a field added since it was written, e.g.
        `selection`) counts as its value in `defaults`, i.e. what the old run did.
        """
        if not self.path.exists() or not any(p.name != LOCK_NAME for p in self.path.iterdir()):
            return False
        cfg = self.path / "config.json"
        if not cfg.is_file():
            raise FileExistsError(
                f"{self.path} exists and is not an align run directory (no config.json); "
                "choose another --out"
            )
        old = {**(defaults or {}), **io.read_json(cfg)}
        diff = sorted(
            k for k in set(old) | set(config)
            if k not in RESUMABLE_KEYS and old.get(k) != config.get(k)
        )
        if diff:
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise FileExistsError(
                f"{self.path} holds a run with another configuration ({detail}); "
                "choose another --out or delete it"
            )
        return True

    def busy(self) -> bool:
        """Whether another process holds the run's lock (trains here now)."""
        if not self.path.is_dir():
            return False
        try:
            with RunLock(self.path):
                return False
        except RunLocked:
            return True

    def write_json(self, name: str, obj: Any) -> None:
        io.write_json(self.path / name, obj)

    def truncate_results(self, max_step: int) -> list[dict]:
        """Drop evaluation records newer than the checkpoint we resume from (atomically)."""
        records = [r for r in io.read_jsonl(self.results) if r["step"] <= max_step]
        io.write_text(self.results, "".join(json.dumps(r) + "\n" for r in records))
        return records

    def mark_done(self) -> None:
        io.write_text(self.path / "done", "done\n")


#: align's source tree when it runs from a checkout (src/align/training/rundir.py -> the root).
SOURCE_ROOT = Path(__file__).resolve().parents[3]


def git_state(root: Path = SOURCE_ROOT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout whose top level is `root`; (None, None) when `root`
    is no checkout's top level (an installed align, whose folder may sit inside another repo),
    or git is missing or fails. Dirty: tracked files differ from the commit."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None, None
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment(device: Any = None) -> dict[str, Any]:
    """env.json: versions, the device (with the GPU's name), the git commit of align's source
    (`git_state`) and the command line."""
    import numpy
    import PIL
    import torch
    import torchvision

    commit, dirty = git_state()
    gpu = device is not None and torch.device(device).type == "cuda"
    return {
        "align": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": None if device is None else str(device),
        "device_name": torch.cuda.get_device_name(torch.device(device)) if gpu else None,
        "git_commit": commit,
        "git_dirty": dirty,
        "argv": sys.argv,
    }
