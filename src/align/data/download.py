"""Resumable HTTP downloads with a progress display and a checksum check.

A download goes to `FILE.part` and is renamed to `FILE` only once every byte arrived, so a
`FILE` is always complete. An interrupted download keeps its `.part`; the next call asks the
server for the rest (an HTTP `Range` request) and appends it. A server that ignores `Range`
(status 200 instead of 206) gets the file again from the start. Failures raise `DownloadError`,
naming the URL and the file.

Progress: a rich progress bar on a terminal; without one (a batch job's log), one plain line
per tenth of the file.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

from align.data.decode import DataError

_CHUNK = 1 << 20
_USER_AGENT = "align-prepare"


class DownloadError(DataError):
    """A download that failed or does not match its checksum; the message names URL and file."""


def part_path(dest: Path) -> Path:
    """Where the bytes of `dest` collect until it is complete."""
    return dest.with_name(dest.name + ".part")


def fetch(url: str, dest: str | Path, *, checksum: str | None = None,
          console: Console | None = None, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, resuming a `dest.part` left by an interrupted call.

    Args:
        url: http(s) URL.
        dest: the file to write; an existing `dest` counts as complete and is only verified.
        checksum: "md5:HEX" or "sha256:HEX"; a mismatching download is deleted (it is ours).
        console: where progress goes (default: a console on stderr).
        timeout: seconds without data before the connection counts as dropped.

    Raises:
        DownloadError: the server refused, the connection dropped (the `.part` is kept: call
            again to resume), an HTML page came instead of a file, or the checksum differs.
    """
    dest = Path(dest)
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _download(url, dest, console or Console(stderr=True), timeout)
    if checksum is not None:
        try:
            verify_checksum(dest, checksum, source=url)
        except DownloadError as e:
            dest.unlink()
            raise DownloadError(f"{e}; deleted {dest}, run again to download it anew") from None
    return dest


def verify_checksum(path: Path, checksum: str, *, source: str | None = None) -> None:
    """Raise `DownloadError` unless `path` hashes to `checksum` ("md5:HEX" / "sha256:HEX")."""
    algo, _, expected = checksum.partition(":")
    if algo not in ("md5", "sha256") or not expected:
        raise ValueError(f"checksum {checksum!r} is not 'md5:HEX' or 'sha256:HEX'")
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    if h.hexdigest() != expected.lower():
        origin = f" (from {source})" if source else ""
        raise DownloadError(f"{path}{origin}: {algo} is {h.hexdigest()}, expected {expected} "
                            "(if the source was re-published on purpose, --no-checksum skips this "
                            "test; the image counts are checked all the same)")


def _download(url: str, dest: Path, console: Console, timeout: float) -> None:
    part = part_path(dest)
    offset = part.stat().st_size if part.is_file() else 0
    response = _open(url, offset, timeout, dest)
    if response is None:  # the .part already holds the whole file (the server said 416)
        part.rename(dest)
        return
    with response:
        status = response.status
        if offset and status == 200:  # Range ignored: the body is the whole file again
            offset = 0
        elif offset and status == 206:
            _check_content_range(response.headers.get("Content-Range"), offset, url)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        kind = response.headers.get("Content-Type", "")
        if kind.startswith("text/html"):
            raise DownloadError(
                f"{url} sent an HTML page instead of {dest.name} (a quota or sign-in page of the "
                "host, or a wrong URL); download the file in a browser and pass it with --archive")
        got = _copy(response, part, offset, total, url, dest, console)
    if total is not None and got != total:
        raise DownloadError(
            f"download of {url} stopped at {got:,} of {total:,} bytes (the server closed the "
            f"connection); the {got:,} bytes are kept in {part}: run the same command again "
            "to resume from there")
    part.rename(dest)


def _open(url: str, offset: int, timeout: float, dest: Path):
    """The HTTP response for the bytes from `offset` on; None when the `.part` is complete."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            size = re.fullmatch(r"bytes \*/(\d+)", e.headers.get("Content-Range", "") or "")
            if size and int(size.group(1)) == offset:
                return None
            part_path(dest).unlink()  # longer than the file: not ours to resume
            raise DownloadError(f"{url}: the partial download {part_path(dest)} does not fit "
                                "the file on the server; deleted it, run again") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason} (while fetching {dest.name}); "
                            "if the host is unreachable from here, use --mirror or --archive"
                            ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: cannot connect ({reason}) (while fetching {dest.name}); "
                            "if this machine has no internet, use --mirror or --archive") from None


def _check_content_range(header: str | None, offset: int, url: str) -> None:
    start = re.match(r"bytes (\d+)-", header or "")
    if start is None or int(start.group(1)) != offset:
        raise DownloadError(f"{url}: asked for the bytes from {offset:,} on, the server sent "
                            f"Content-Range {header!r}")


def _copy(response, part: Path, offset: int, total: int | None, url: str, dest: Path,
          console: Console) -> int:
    """Append the body to `part` (truncated to `offset`); the number of bytes it then holds."""
    show = _Display(console, dest.name, total, offset)
    got = offset
    with open(part, "r+b" if offset else "wb") as f, show:
        f.truncate(offset)
        f.seek(offset)
        while True:
            try:
                block = response.read(_CHUNK)
            except (http.client.IncompleteRead, OSError, http.client.HTTPException) as e:
                f.flush()
                raise DownloadError(
                    f"download of {url} interrupted after {got:,} bytes "
                    f"({type(e).__name__}: {e}); the bytes are kept in {part}: run the same "
                    "command again to resume from there") from None
            if not block:
                return got
            f.write(block)
            got += len(block)
            show.update(got)


class _Display:
    """A rich bar on a terminal; otherwise a plain line per 10% (or per 100 MiB of unknown
    size), so a batch log stays short."""

    def __init__(self, console: Console, name: str, total: int | None, start: int) -> None:
        self.console, self.name, self.total = console, name, total
        self.bar = None
        if console.is_terminal:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                console=console)
            self.task = self.bar.add_task(name, total=total, completed=start)
        self.step = max(1, total // 10) if total else 100 << 20
        self.next = (start // self.step + 1) * self.step
        if start:
            console.print(f"{name}: resuming at {_size(start)}", highlight=False)

    def __enter__(self) -> "_Display":
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def update(self, got: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=got)
        elif got >= self.next or got == self.total:
            of = f" of {_size(self.total)}" if self.total else ""
            self.console.print(f"{self.name}: {_size(got)}{of}", highlight=False)
            self.next = (got // self.step + 1) * self.step


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"
