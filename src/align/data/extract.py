"""Safe extraction of tar and zip archives: nothing may land outside the target folder.

An archive is untrusted input. Every member is checked before it is written: its name must be
relative, without `..` components, and resolve inside the target; only regular files and folders
are accepted: symbolic links, hard links, device files and FIFOs are refused, whatever they point
at (DomainBed's archives hold none). The first bad member stops the extraction with an
`UnsafeArchive` error naming it; the caller extracts into a staging folder of its own and deletes
it on failure. On top of these checks, tar members go through the standard library's
`filter="data"` where it exists (Python 3.12, and the 3.8-3.11 security releases of 2023), which
also drops set-uid bits and other unsafe modes.

Tar members are checked and extracted one by one in archive order, so a multi-gigabyte `.tar.gz`
is decompressed once (only forward seeks). A truncated archive is an error, not a partial
extraction: the gzip / bzip2 / xz reader notices a stream that ends early, and a plain tar must
end with its end-of-archive block (tarfile itself takes a missing header for the end).
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from align.data.decode import DataError


class UnsafeArchive(DataError):
    """An archive member that would escape the target folder, or is not a plain file or folder."""


# The standard filter's error type where it exists; an empty tuple catches nothing.
_FILTER_ERROR = getattr(tarfile, "FilterError", ())


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a zip or (compressed) tar archive into `dest` (created), checking every member.

    Returns:
        `dest`.

    Raises:
        UnsafeArchive: naming the archive and the first offending member.
        DataError: the file is neither a zip nor a tar archive, or is truncated.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, dest)
    else:
        raise DataError(f"{archive} is neither a zip nor a tar archive (a truncated download, or "
                        "an HTML page saved under an archive's name?)")
    return dest


def _check_name(archive: Path, name: str, dest: Path) -> None:
    """Refuse absolute names, drive letters, `..` components and anything resolving outside."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    why = None
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        why = "an absolute path"
    elif ".." in posix.parts or ".." in windows.parts:
        why = "a '..' component"
    elif dest.resolve() not in (dest / name).resolve().parents and name.strip("/") not in ("", "."):
        why = "a path outside the target folder"
    if why is not None:
        raise UnsafeArchive(f"{archive}: member {name!r} has {why}; refusing to extract "
                            f"anything more (target {dest})")


def _extract_tar(archive: Path, dest: Path) -> None:
    data_filter = getattr(tarfile, "data_filter", None)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _check_name(archive, member.name, dest)
                if not (member.isfile() or member.isdir()):
                    kind = ("a symbolic link" if member.issym() else "a hard link"
                            if member.islnk() else "a device or FIFO")
                    target = f" to {member.linkname!r}" if member.linkname else ""
                    raise UnsafeArchive(f"{archive}: member {member.name!r} is {kind}{target}; "
                                        "only files and folders are extracted, refusing")
                if data_filter is not None:
                    tar.extract(member, dest, filter=data_filter)
                else:  # pragma: no cover - Pythons without the 2023 tarfile filters
                    tar.extract(member, dest)
            tar.fileobj.seek(tar.offset)
            end = tar.fileobj.read(tarfile.BLOCKSIZE)
            if len(end) < tarfile.BLOCKSIZE or end.strip(b"\0"):
                raise EOFError(f"no end-of-archive block after {len(tar.members)} member(s)")
    except _FILTER_ERROR as e:  # the standard filter's own refusal (e.g. an unsafe mode)
        raise UnsafeArchive(f"{archive}: {e}; refusing") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # the disk, not the archive
            raise
        raise DataError(f"{archive}: cannot read the tar archive ({type(e).__name__}: {e}); "
                        "a truncated or corrupt file?") from None


def _extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:  # all names first: the central directory is cheap to read
                _check_name(archive, info.filename, dest)
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where no Unix type is stored
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise UnsafeArchive(f"{archive}: member {info.filename!r} is not a plain "
                                        "file or folder (a symbolic link?); refusing")
            for info in members:
                zf.extract(info, dest)
    except (zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{archive}: cannot read the zip archive ({e}); a truncated or corrupt "
                        "file?") from None
