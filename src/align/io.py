"""Atomic file writes: a reader never sees half a file, a crash never leaves one behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: querying the umask means setting it, which is not thread-safe.
_UMASK = _umask()
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


def temp_dir_beside(path: str | os.PathLike) -> Path:
    """A new hidden folder next to `path`, to be filled and then renamed onto it (atomic install).

    Unlike a bare `tempfile.mkdtemp` (always 0700), it gets the permissions a plain `mkdir`
    would, so the folder it becomes is as readable as any other (a shared dataset, say).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    tmp.chmod(_DIR_MODE)
    return tmp


def install_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Rename the finished folder `tmp` onto `out` (made by :func:`temp_dir_beside`).

    A non-empty `out` is moved aside first and deleted only once `tmp` is in place; if that
    rename fails the old folder is put back. So `out` is always either the old folder or the
    whole new one, never half of either. An empty `out` is simply replaced.
    """
    tmp, out = Path(tmp), Path(out)
    if out.exists() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)


def _atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            # mkstemp creates the file private (0600); give it the permissions a plain open()
            # would, so results written to a shared cluster folder stay readable by the group.
            os.fchmod(f.fileno(), _FILE_MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    _atomic(path, lambda f: f.write(text), "w")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data), "wb")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(path: str | os.PathLike, obj: Any) -> None:
    _atomic(path, lambda f: torch.save(obj, f), "wb")


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be loaded (empty, truncated, or not plain tensors/data)."""


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint we wrote; `weights_only=True` so a file cannot run code.

    Raises:
        FileNotFoundError: naming the file.
        CheckpointError: the file is empty, truncated, or holds anything but tensors and plain
            data (a pickle that would run code is refused, never executed), naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; name it
        why = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path} is not a usable checkpoint ({type(e).__name__}{': ' + why if why else ''}): "
            "it may be empty or truncated (a full disk, a copy cut short), or not written by align "
            "(only tensors and plain data are loaded). Move it away to start that run afresh."
        ) from None


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; errors name the file (a missing file, or one cut short or edited)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}); it may have "
                         "been cut short or edited by hand") from None


#: The temporaries `_atomic` creates: `.NAME.<8 random chars>.tmp` (mkstemp's prefix/suffix).
_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the atomic writer's temporaries that a killed process left in `folder` (only files
    named as `_atomic` names them; call it only while holding the folder's lock)."""
    removed = []
    for p in Path(folder).iterdir() if Path(folder).is_dir() else []:
        if p.is_file() and _TEMPORARY.fullmatch(p.name):
            p.unlink()
            removed.append(p)
    return removed


def claim_output_folder(out: str | os.PathLike, names: Sequence[str], made_by: str,
                        earlier: Callable[[Path], bool] = lambda out: False) -> Path:
    """Make `out` the folder `made_by` (a command) writes `names` into, or refuse before anything
    is written: `out` is a file, or holds one of `names` that `made_by` did not write (no marker
    `.align-report` for "align report", say, and `earlier` does not recognise an output of a
    version before the marker) -- a user's own index.html or results.md is never overwritten.
    The marker is written first, so an output cut short is still recognised."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder; choose another --out")
    marker = out / ("." + made_by.replace(" ", "-"))
    clash = [n for n in names if (out / n).exists()]
    if clash and not (marker.is_file() or earlier(out)):
        raise FileExistsError(
            f"--out {out} holds {', '.join(clash)}, not written by `{made_by}`: they are left "
            "untouched; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text(marker, f"written by {made_by}\n")
    return out


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line. The line is written whole with a single write call and fsynced."""
    line = json.dumps(record) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not a JSON line ({e.msg})") from None
    return out


class ProcessLock:
    """An exclusive OS lock (`fcntl.flock`) on a file, held by one process at a time.

    The OS releases it when the holder exits in any way (kill -9 included), so a lock file left
    by a dead process is simply taken over; the file holds the holder's PID for the message.
    Where `fcntl` does not exist (Windows) no lock is taken. Used for run directories (one
    training per run), `align prepare`'s staging folder (one download per `.part`) and a sweep's
    shared setup (launchers wait for each other: `wait=True`).

    Args:
        path: the lock file (created if missing, with its folder).
        busy: the message when another process holds it; `{pid}` is replaced by its PID.
        error: the exception class raised then (a `UserError`, so the CLI prints the message).
        wait: wait for the holder to release it instead of raising.
        remove: the holder deletes the file when it releases it, for a one-off task that should
            leave no lock file behind. A process that opened the file before it was deleted
            would otherwise lock a file nobody else sees; so the lock is taken only once the
            locked file is still the one at `path` (otherwise the new file is locked).
    """

    def __init__(self, path: str | os.PathLike, busy: str = "{pid} holds the lock",
                 error: type[UserError] = UserError, *, wait: bool = False,
                 remove: bool = False) -> None:
        self.path, self.busy, self.error = Path(path), busy, error
        self.wait, self.remove = wait, remove
        self._file = None

    def __enter__(self) -> "ProcessLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> "ProcessLock":
        """Take the lock (waiting for it with `wait`), or raise `error` naming the holder's PID."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                f.close()
                raise self.error(self.busy.replace("{pid}", holder)) from None
            if not self.remove or self._still_at_path(f):
                break
            f.close()  # deleted by its holder since we opened it: lock the file now there
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return self

    def _still_at_path(self, f: Any) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._file is not None:
            if self.remove:
                self.path.unlink(missing_ok=True)  # while still held: see `remove`
            self._file.close()  # closing releases the lock
            self._file = None
