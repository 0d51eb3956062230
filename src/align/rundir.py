"""Reading run directories: one reader with typed accessors, for every consumer of a run's files.

    run = RunFiles("runs/align")
    run.config(), run.protocol(), run.dataset(), run.splits(), run.summary()   # dicts
    run.records()        # results.jsonl: one dict per evaluation during training
    run.is_done()        # training finished (the `done` marker)
    run.is_finished()    # its results are final (done, or a copy of them without checkpoints)
    run.evaluation()     # evaluation.json (`align evaluate`), format and version checked
    run.examples()       # examples.npz: the example images and maps the evaluation saved

The layout is `align.training.rundir`'s docstring (the writer, with the run lock); evaluation.json
and examples.npz are `align.evaluate`'s. This reader sits beside `io`, below both, so that the
report, the sweeps and the Python API read runs without importing the training stack, and every
read failure says the same thing: a `RunDirError` naming the file and what to do (a missing file
is also a `FileNotFoundError`).
"""

from __future__ import annotations

import hashlib
import io as _io
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import io
from .errors import UserError
from .protocols import PROTOCOLS

#: Format and version of evaluation.json (`align.evaluate` writes it; other versions are refused
#: here and recomputed there). Version 2 added the example images (examples.npz).
EVALUATION_FORMAT = "align-evaluation"
EVALUATION_VERSION = 2
EVALUATION_FILE = "evaluation.json"
PARTIAL_FILE = "evaluation.partial.json"
EXAMPLES_FILE = "examples.npz"
#: What a run selects when its config.json predates the `selection` key.
DEFAULT_SELECTION = "training_domain_validation"
_NAME = re.compile(r"[A-Za-z0-9_-]+")


class RunDirError(UserError, ValueError):
    """A run directory file that is missing or unusable; the message names it and what to do."""


class MissingRunFile(RunDirError, FileNotFoundError):
    """A run directory file that does not exist."""


class EvaluationFiles(NamedTuple):
    """The files of one evaluation, in its run directory (see `evaluation_files`)."""

    json: str
    partial: str  # the finished splits so far, while it runs
    examples: str
    partial_examples: str  # the examples of a partial evaluation


def evaluation_files(name: str | None = None) -> EvaluationFiles:
    """The file names of an evaluation: `evaluation.json`, `evaluation.partial.json`,
    `examples.npz`, `examples.partial.npz`, or with a name `evaluation-<name>.json`, ...,
    `examples-<name>.npz`, ..."""
    if name is None:
        return EvaluationFiles(EVALUATION_FILE, PARTIAL_FILE, EXAMPLES_FILE, "examples.partial.npz")
    if not _NAME.fullmatch(name):
        raise ValueError(f"evaluation name must be letters, digits, '-' or '_'; got {name!r}")
    return EvaluationFiles(f"evaluation-{name}.json", f"evaluation-{name}.partial.json",
                           f"examples-{name}.npz", f"examples-{name}.partial.npz")


def eval_splits(protocol: dict) -> list[tuple[str, str]]:
    """[(split key, role)] that `align evaluate` scores for a run's protocol.json: the test keys
    (role `ood`, `in_domain` under `in_distribution`), then the validation keys (`in_domain`)."""
    return PROTOCOLS.get(protocol["name"]).roles(protocol["test_keys"], protocol["val_keys"])


def selection_of(config: dict) -> str:
    """The selection criterion a run's best.pt follows: its config.json's, else the default."""
    return config.get("selection", DEFAULT_SELECTION)


def sha256(data: bytes) -> str:
    """Hex SHA-256 of `data` (how evaluation.json vouches for its examples file)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Examples:
    """The example images of one evaluated split, with what the evaluation made of them.

    N images (`n_examples` of the evaluation config), picked round-robin over classes from the
    split's scored images in a seeded order, so runs with the same split show the same images.

    Attributes:
        split: the split key, e.g. "texture_in".
        paths: [N] relative image paths (domain/class/file).
        labels, predictions: [N] class names (truth, the classifier's prediction).
        images: uint8 [N, H, W, 3], the evaluation's input, de-normalised.
        saliency: float16 [N, H, W], the non-negative maps the metrics scored (Grad-CAM: in
            [0, 1]).
        masker: float16 [N, H, W] in [0, 1], the algorithm's learned mask (ALIGN), else None.
        gt: uint8 [N, H, W] in {0, 1}, the ground-truth mask, else None (no masks).
    """

    split: str
    paths: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    images: np.ndarray
    saliency: np.ndarray
    masker: np.ndarray | None = None
    gt: np.ndarray | None = None

    def to_bytes(self) -> bytes:
        """The .npz file (compressed; strings as unicode arrays, so it loads without pickle)."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)
                  if getattr(self, f.name) is not None}
        buf = _io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Examples":
        """Read a file `to_bytes` wrote (no pickle: a file cannot run code)."""
        with np.load(_io.BytesIO(data), allow_pickle=False) as z:
            got = {f.name: z[f.name] if f.name in z.files else None for f in fields(cls)}
        return cls(**{**got, "split": str(got["split"])})


class RunFiles:
    """Read-only access to one run directory's files (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def _file(self, name: str, hint: str = "is it an align run directory?") -> Path:
        p = self.path / name
        if not p.is_file():
            raise MissingRunFile(f"{self.path}: no {name}; {hint}")
        return p

    def read_json(self, name: str, hint: str = "is it an align run directory?") -> Any:
        """A JSON file of the run; `RunDirError` naming it when missing or not valid JSON."""
        p = self._file(name, hint)
        try:
            return io.read_json(p)
        except ValueError as e:
            raise RunDirError(f"{e}; restore it or train the run again") from None

    # ---- training's files
    def config(self) -> dict:
        return self.read_json("config.json")

    def protocol(self) -> dict:
        return self.read_json("protocol.json")

    def dataset(self) -> dict:
        return self.read_json("dataset.json")

    def splits(self) -> dict:
        return self.read_json("splits.json")

    def summary(self) -> dict:
        return self.read_json("summary.json", "has it finished training? (run the same "
                                              "`align train` command again to resume it)")

    def records(self) -> list[dict]:
        """results.jsonl, one dict per evaluation during training ([] before the first)."""
        try:
            return io.read_jsonl(self.path / "results.jsonl")
        except ValueError as e:
            raise RunDirError(str(e)) from None

    def is_done(self) -> bool:
        return (self.path / "done").is_file()

    def is_finished(self) -> bool:
        """Its summary.json is final: training wrote the `done` marker, or the folder has no
        checkpoints/last.pt to resume from (a copy of a finished run's results, e.g. the tests'
        golden runs). A run trained further has neither, and its old summary.json is stale."""
        return (self.path / "summary.json").is_file() and (
            self.is_done() or not self.checkpoint("last").is_file())

    def checkpoint(self, which: str = "best") -> Path:
        """Path of checkpoints/best.pt or last.pt (which may not exist)."""
        if which not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
        return self.path / "checkpoints" / f"{which}.pt"

    # ---- `align evaluate`'s files
    def has_evaluation(self, name: str | None = None) -> bool:
        return (self.path / evaluation_files(name)[0]).is_file()

    def evaluation(self, name: str | None = None) -> dict:
        """evaluation.json (or evaluation-<name>.json) of this align version's format.

        Raises:
            MissingRunFile: the run was not evaluated (the message gives the command).
            RunDirError: a file that is not valid JSON or of another format version.
        """
        final = evaluation_files(name)[0]
        command = f"align evaluate {self.path}" + (f" --name {name}" if name else "")
        record = self.read_json(final, f"the run has not been evaluated: run `{command}`")
        if record.get("format") != EVALUATION_FORMAT or record.get("version") != EVALUATION_VERSION:
            raise RunDirError(
                f"{self.path / final} was written by another version of align (format "
                f"{record.get('format')!r} version {record.get('version')!r}, this one reads "
                f"version {EVALUATION_VERSION}): run `{command}` to evaluate the run again")
        return record

    def examples(self, name: str | None = None) -> Examples | None:
        """The evaluation's example images (None when it was made with `n_examples=0`).

        Raises:
            RunDirError: the file is missing, unreadable or not the one evaluation.json records
                (both are rewritten by `align evaluate`, the examples first).
        """
        entry = self.evaluation(name).get("examples")
        if entry is None:
            return None
        command = f"align evaluate {self.path} --overwrite" + (f" --name {name}" if name else "")
        data = self._file(entry["file"], f"run `{command}`").read_bytes()
        if sha256(data) != entry["sha256"]:
            raise RunDirError(f"{self.path / entry['file']} is not the file "
                              f"{evaluation_files(name)[0]} records (an evaluation cut short?); "
                              f"run `{command}`")
        try:
            return Examples.from_bytes(data)
        except (ValueError, KeyError, OSError) as e:
            raise RunDirError(f"{self.path / entry['file']} cannot be read ({e}); "
                              f"run `{command}`") from None


def examples_entry(file: str, examples: Examples, data: bytes) -> dict:
    """How evaluation.json records its examples file (checked by `RunFiles.examples`)."""
    return {"file": file, "split": examples.split, "n": int(len(examples.paths)),
            "sha256": sha256(data)}
