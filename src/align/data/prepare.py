"""`align prepare`: download a DomainBed dataset, extract it safely, lay it out, check it.

Each dataset is a `Recipe` in `RECIPES`: the archives DomainBed's download script
(`domainbed/scripts/download.py`) fetches, their checksums where the archive is a fixed file, the
folder name DomainBed expects under its `--data_dir`, and a build step that turns the extracted
archives into `<domain>/<class>/<image>`.

All work happens in a staging folder, `ROOT/.align-prepare/<name>/` (`downloads/`, `extract/`,
`result/`). Only a result that passes `check_dataset` (domains, classes, per-domain counts of a
known release) is renamed into place, `ROOT/<folder>`, in one atomic step. A failed or
interrupted run leaves no folder that passes the check: the extracted and built trees are
deleted, the downloads are kept so that the next run resumes them (a `.part` continues where it
stopped). An existing target is never modified: a complete one is reported, an incomplete one is
an error. Nothing outside the staging folder is deleted, and the staging folder itself only when
it carries the marker this module writes into it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console

from align.data.check import CheckResult, check_dataset
from align.data.decode import DataError
from align.data.download import fetch, verify_checksum
from align.data.extract import extract
from align.data.presets import Preset, get_preset
from align.data import terra_incognita as terra
from align import io
from align.registry import Registry

#: The staging folder's name under ROOT (hidden: scans of ROOT skip it).
STAGING = ".align-prepare"
#: The file that marks a staging folder as made by this module (and so deletable by it).
_MARKER = "made-by-align-prepare"
#: The record written into a prepared folder (hidden: scans skip it).
RECORD = ".align-prepare.json"


@dataclass(frozen=True)
class Source:
    """One archive a dataset is built from.

    Args:
        filename: its file name (also its name under a `--mirror` URL and for `--archive`).
        url: where DomainBed's download script gets it.
        checksum: "md5:HEX" / "sha256:HEX" where the archive is a fixed file, else None.
    """

    filename: str
    url: str
    checksum: str | None = None


# Built by `build(extracted, out, preset)`: `extracted` maps each source's file name to the
# folder it was extracted into; `out` (absent) becomes ROOT/<domain>/<class>/<image>.
Build = Callable[[dict[str, Path], Path, Preset], None]


@dataclass(frozen=True)
class Recipe:
    """How to prepare one dataset: its sources, the folder name DomainBed expects, its licence."""

    name: str
    folder: str
    sources: tuple[Source, ...]
    licence: str
    build: Build


@dataclass(frozen=True)
class PrepareResult:
    """The prepared folder, its check, and whether this call created it."""

    target: Path
    check: CheckResult
    created: bool


RECIPES: Registry[Recipe] = Registry("dataset")


def _drive(file_id: str) -> str:
    # The direct-download endpoint: `drive.google.com/uc?id=` (DomainBed's form, read through
    # gdown) answers large files with an HTML confirmation page instead of the file.
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


# --------------------------------------------------------------------------------------- building


def _find_domain_parent(top: Path, domains: Sequence[str], label: str) -> Path:
    """The folder under `top` (breadth first, 4 levels) whose sub-folders include all `domains`."""
    level, best = [top], (0, top)
    for _ in range(4):
        below = []
        for d in level:
            names = {e.name for e in os.scandir(d) if e.is_dir()}
            found = len(names & set(domains))
            if found == len(domains):
                return d
            best = max(best, (found, d), key=lambda b: b[0])
            below += [d / n for n in sorted(names) if not n.startswith((".", "__MACOSX"))]
        level = below
    if best[0]:
        have = {e.name for e in os.scandir(best[1]) if e.is_dir()}
        raise DataError(f"{label}: {best[1]} holds domain folders {sorted(have & set(domains))} "
                        f"but not {sorted(set(domains) - have)}")
    entries = sorted(e.name for e in os.scandir(top))
    raise DataError(f"{label}: no folder in the archive holds the domain folders {list(domains)}; "
                    f"its top level holds {entries}")


def build_from_domain_folders(extracted: dict[str, Path], out: Path, preset: Preset) -> None:
    """An archive that already holds `<domain>/<class>/<image>` somewhere inside (DomainBed's
    VLCS, PACS' `kfold/`, Office-Home's `OfficeHomeDataset_10072016/`): move the domain folders
    into `out`; anything else in the archive (lists, readme files) stays behind."""
    (label, top), = extracted.items()
    parent = _find_domain_parent(top, preset.domains, label)
    out.mkdir(parents=True)
    for d in preset.domains:
        os.rename(parent / d, out / d)


# ---------------------------------------------------------------------------------------- recipes

# The md5 sums of the three Google Drive archives are those recorded by the DomainBed loaders of
# LarsKue/context-aware-domain-generalization (not re-measured here: no download in this repo's
# tests). LILA's files have none published, and its hosts have changed more than once.
_LILA = "https://storage.googleapis.com/public-datasets-lila/caltechcameratraps"

for _recipe in (
    Recipe("vlcs", "VLCS", (Source("VLCS.tar.gz", _drive("1skwblH1_okBwxWxmRsp9_qi15hyPpxg8"),
                                   "md5:8870171eba660927d9668f4e515928e4"),),
           "none stated; images from PASCAL VOC 2007, LabelMe, Caltech101 and SUN09 under their "
           "own terms (research use)", build_from_domain_folders),
    Recipe("terra_incognita", "terra_incognita",
           (Source(terra.IMAGES, f"{_LILA}/{terra.IMAGES}"),
            Source(terra.ANNOTATIONS, f"{_LILA}/{terra.ANNOTATIONS}")),
           "Community Data License Agreement, permissive variant (CDLA-Permissive-1.0)",
           terra.build_terra_incognita),
    Recipe("pacs", "PACS", (Source("PACS.zip", _drive("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd"),
                                   "md5:fd5db817f7cdafeef3bfd525aaf9b42e"),),
           "none stated by the authors (research use)", build_from_domain_folders),
    Recipe("office_home", "office_home",
           (Source("office_home.zip", _drive("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC"),
                   "md5:b1c14819770c4448fd5b6d931031c91c"),),
           "non-commercial research and educational use only (the dataset's fair-use notice)",
           build_from_domain_folders),
):
    RECIPES.register(_recipe.name)(_recipe)


def sources_table() -> str:
    """The Markdown table of every recipe's sources, checksums and licence (docs/datasets.md)."""
    rows = ["| dataset | folder | archive | source | checksum | licence |",
            "|---|---|---|---|---|---|"]
    for name in RECIPES:
        r = RECIPES.get(name)
        for s in r.sources:
            check = f"`{s.checksum}`" if s.checksum else "none (the host's file may change)"
            rows.append(f"| {name} | `{r.folder}` | `{s.filename}` | <{s.url}> | {check} | "
                        f"{r.licence} |")
    return "\n".join(rows) + "\n"


# -------------------------------------------------------------------------------------- preparing


class _Staging:
    """`ROOT/.align-prepare/<name>/`, held under an exclusive lock (two `align prepare` of the
    same dataset would write the same `.part`). On failure the extracted and built trees go and
    the downloads stay (to resume); on success the whole folder goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.downloads, self.extract, self.result = (path / n for n in
                                                      ("downloads", "extract", "result"))
        self._lock = None

    def __enter__(self) -> "_Staging":
        if self.path.exists() and not (self.path / _MARKER).is_file():
            raise DataError(f"{self.path} exists but was not made by align prepare; move it "
                            "away and run again")
        self.downloads.mkdir(parents=True, exist_ok=True)
        (self.path / _MARKER).touch()
        self._lock = io.ProcessLock(self.path / "lock", error=DataError, busy=(
            f"another align prepare (PID {{pid}}) is working in {self.path}; wait for it to "
            "finish"))
        self._lock.acquire()
        for d in (self.extract, self.result):  # an earlier attempt's leftovers: ours, restart
            shutil.rmtree(d, ignore_errors=True)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        for d in (self.extract, self.result):
            shutil.rmtree(d, ignore_errors=True)
        self._lock.release()
        if exc_type is None or not any(self.downloads.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)
            try:
                self.path.parent.rmdir()  # ROOT/.align-prepare, if no other dataset is staged
            except OSError:
                pass


def _local_archives(recipe: Recipe, archives: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """Source file name -> local file, matched by file name (any name for a one-archive
    dataset)."""
    names = [s.filename for s in recipe.sources]
    out: dict[str, Path] = {}
    for a in map(Path, archives):
        if not a.is_file():
            raise DataError(f"--archive {a}: no such file")
        key = a.name if a.name in names else names[0] if len(names) == 1 else None
        if key is None:
            raise DataError(f"--archive {a}: {recipe.name} is built from {names}; name the file "
                            "after the archive it is (rename or link it)")
        if key in out:
            raise DataError(f"--archive given twice for {key}: {out[key]} and {a}")
        out[key] = a.resolve()
    return out


def prepare(name: str, root: str | os.PathLike, *, archives: Sequence[str | os.PathLike] = (),
            mirror: str | None = None, preset: Preset | None = None, checksums: bool = True,
            decode: bool = True, console: Console | None = None) -> PrepareResult:
    """Prepare dataset `name` as `ROOT/<folder>` (DomainBed's layout and folder name).

    Args:
        name: a recipe ("vlcs", "terra_incognita", "pacs", "office_home").
        root: the data folder (DomainBed's `--data_dir`); created if missing.
        archives: local copies of source archives, used instead of downloading them.
        mirror: a base URL holding the archives under their file names (`MIRROR/VLCS.tar.gz`),
            used instead of the original hosts.
        preset: the expected layout and counts (default: the preset called `name`; tests pass
            scaled-down counts).
        checksums: verify archives that have a known checksum.
        decode: decode every image in the check (False counts files only).
        console: where progress and messages go.

    Raises:
        DataError: naming the URL, file, archive member, domain or class at fault.
    """
    recipe, spec = RECIPES.get(name), preset or get_preset(name)
    console = console or Console(stderr=True)
    root = Path(root).expanduser().resolve()
    target = root / recipe.folder
    if target.exists():
        try:
            return PrepareResult(target, check_dataset(target, spec, decode=decode), False)
        except DataError as e:
            raise DataError(f"{target} already exists but fails the check, and align prepare "
                            f"changes no folder it did not make: move it away and run again. "
                            f"The check said: {e}") from None
    local = _local_archives(recipe, archives)
    root.mkdir(parents=True, exist_ok=True)
    with _Staging(root / STAGING / name) as stage:
        files, origins = {}, {}
        for s in recipe.sources:
            if s.filename in local:
                files[s.filename] = origins[s.filename] = local[s.filename]
                if checksums and s.checksum:
                    verify_checksum(local[s.filename], s.checksum)
                continue
            url = s.url if mirror is None else f"{mirror.rstrip('/')}/{s.filename}"
            origins[s.filename] = url
            files[s.filename] = fetch(url, stage.downloads / s.filename, console=console,
                                      checksum=s.checksum if checksums else None)
        console.print(f"{name}: extracting {', '.join(files)}", highlight=False)
        extracted = {f: extract(p, stage.extract / f) for f, p in files.items()}
        built = stage.result / recipe.folder
        recipe.build(extracted, built, spec)
        try:
            check = check_dataset(built, spec, decode=decode)
        except DataError as e:
            kept = (f" (the downloads stay in {stage.downloads}; delete them to download anew)"
                    if any(stage.downloads.iterdir()) else "")
            raise DataError(f"{name}: the folder built from {list(files)} fails the check, so "
                            f"nothing was moved to {target}{kept}: {e}") from None
        _write_record(built, recipe, check, origins, checksums)
        if target.exists():
            raise DataError(f"{target} appeared while preparing; left it as is")
        os.rename(built, target)
    return PrepareResult(target, dataclasses.replace(check, root=target), True)


def _write_record(folder: Path, recipe: Recipe, check: CheckResult, origins: dict,
                  checksums: bool) -> None:
    record = {
        "dataset": recipe.name, "release": check.release.name, "total": check.total,
        "counts": check.counts,
        "sources": [{"file": s.filename, "from": str(origins[s.filename]),
                     "checksum": s.checksum if checksums else None} for s in recipe.sources],
    }
    (folder / RECORD).write_text(json.dumps(record, indent=1) + "\n")
