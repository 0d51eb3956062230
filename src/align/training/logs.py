"""What training logs beside results.jsonl: a plain line per evaluation for batch jobs (the CLI
prints it when its output is no terminal, `align.ui.progress_bar`) and an optional TensorBoard
event file (config `tensorboard: true`, in RUN/tensorboard/).

Both are built from the evaluation record itself, the dict appended to results.jsonl, so a field
added to the record (images per second, peak memory, ...) appears in both without a change here:

    erm A seed 0 step 300/5001 | losses: loss=0.6931 ce=0.6931 | acc: A_in=0.5 B_out=0.45 | seconds=12.3

Every number of the record is a scalar whose tag is its path in the record (`losses/ce`,
`acc/A_in`, `seconds`), except the step (the x axis) and the per-split details (`DETAIL`: mean
cross-entropy, sample counts, the algorithm's evaluation scores), which stay in results.jsonl.
"""

from __future__ import annotations

from pathlib import Path

#: Per-split details of a record left out of the line and the event file.
DETAIL = ("ce", "n", "eval")


def record_scalars(record: dict) -> list[tuple[str, float]]:
    """(tag, value) of every number of an evaluation record but its step and `DETAIL`, in the
    record's order; nested dicts give "/"-joined tags (`losses/masker/dist`)."""
    out: list[tuple[str, float]] = []

    def walk(tag: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{tag}/{k}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((tag, float(value)))

    for key, value in record.items():
        if key not in ("step", *DETAIL):
            walk(key, value)
    return out


def _number(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def eval_line(record: dict, label: str, total: int) -> str:
    """One plain line for an evaluation record (module docstring): the label, the step, then one
    `|`-separated group per nested field of the record (its name, then name=value pairs) and
    the record's plain numbers together."""
    groups: dict[str, list[str]] = {}
    for tag, value in record_scalars(record):
        group, _, name = tag.partition("/")
        if name:
            groups.setdefault(f"{group}:", []).append(f"{name}={_number(value)}")
        else:
            groups.setdefault("", []).append(f"{group}={_number(value)}")
    parts = [f"{label} step {record['step']}/{total}"]
    parts += [" ".join(([g] if g else []) + items) for g, items in groups.items()]
    return " | ".join(parts)


class TensorBoardLog:
    """The run's TensorBoard event file, written at each evaluation (a no-op without a folder).

    `open(resume_step)` starts the writer; on resume, events after the step resumed from (left
    by the interrupted process) are purged, as results.jsonl's records are. A context manager:
    the writer is closed however training ends.
    """

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = log_dir
        self.writer = None

    def open(self, resume_step: int) -> None:
        if self.log_dir is None:
            return
        # Imported here: tensorboard is an optional extra (config.validate checks it is there).
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir), purge_step=resume_step + 1 if resume_step
                                    else None)

    def write(self, record: dict) -> None:
        if self.writer is None:
            return
        for tag, value in record_scalars(record):
            self.writer.add_scalar(tag, value, record["step"])
        self.writer.flush()  # evaluations are rare; a batch job's log is read while it runs

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
