"""Scan and validate a DomainBed-layout image folder: ``ROOT/<domain>/<class>/<image>``.

DomainBed reads each domain with `torchvision.datasets.ImageFolder`, so a class folder missing from
one domain silently shifts every later label there, and a truncated JPEG only fails hours into a
run. `scan_domainbed` checks the whole tree up front (class folders agree across domains, no empty
folders, every image decodes, every mask exists and has its image's size) and raises a `DataError`
naming the offending domain, class or file.

Decoding (`load_rgb`, `load_mask`, in `decode.py`) is shared by scanning and training, so both
read pixels alike; pairing images with masks (`pairing.py`) is shared with the mask tools.
"""

from __future__ import annotations

import dataclasses

import logging
import os
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image, ImageFile
from torchvision.datasets.folder import (
    IMG_EXTENSIONS,
    find_classes,
    has_file_allowed_extension,
    make_dataset,
)

from align.data.decode import DataError, listing, load_mask, load_rgb  # noqa: F401  (re-exported)
from align.data.pairing import pair_masks
from align.data.presets import PRESETS, Preset

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Sample:
    """One image. `path` is relative to the image root (posix), `mask_path` to the masks root."""

    path: str
    label: int
    domain: int
    mask_path: str | None = None


@dataclass
class DomainFolder:
    """A validated DomainBed tree.

    `samples` are ordered by domain, then class, then path; `domain` indexes `domains` and
    `label` indexes `classes`. `skipped` lists the image paths (relative) left out as unreadable.
    """

    root: Path
    masks_root: Path | None
    domains: list[str]
    classes: list[str]
    samples: list[Sample]
    skipped: list[str] = field(default_factory=list)
    empty_masks: list[str] = field(default_factory=list)  # masks with no pixel on (relative)

    def __len__(self) -> int:
        return len(self.samples)

    def domain_indices(self, d: int) -> list[int]:
        """Indices into `samples` of domain `d` (ascending)."""
        if not 0 <= d < len(self.domains):
            raise IndexError(f"domain index {d} out of range for domains {self.domains}")
        return [i for i, s in enumerate(self.samples) if s.domain == d]

    def image_path(self, i: int) -> Path:
        return self.root / self.samples[i].path

    def mask_file(self, i: int) -> Path | None:
        s = self.samples[i]
        if s.mask_path is None or self.masks_root is None:
            return None
        return self.masks_root / s.mask_path

    def with_masks(self, masks_root: str | os.PathLike, *, verify: bool = True) -> "DomainFolder":
        """The same images paired with another masks folder (e.g. evaluation-only masks); every
        image must have exactly one mask of its own size there, else one `DataError` lists them."""
        masks_p = Path(masks_root).expanduser().resolve()
        samples = _with_mask_paths(self.root, self.samples, masks_p)
        empty = _check_mask_sizes(self.root, masks_p, samples, [None] * len(samples),
                                  decode=verify)
        return dataclasses.replace(self, masks_root=masks_p, samples=samples, empty_masks=empty)

    def counts(self) -> dict[str, dict[str, int]]:
        """Number of images per domain and class (every class listed, zeros included)."""
        c = Counter((s.domain, s.label) for s in self.samples)
        return {
            dn: {cn: c[(d, k)] for k, cn in enumerate(self.classes)}
            for d, dn in enumerate(self.domains)
        }

    def to_json(self) -> dict:
        """A JSON-ready summary for the run record."""
        return {
            "root": str(self.root),
            "masks_root": None if self.masks_root is None else str(self.masks_root),
            "domains": list(self.domains),
            "classes": list(self.classes),
            "n_samples": len(self.samples),
            "counts": self.counts(),
            "n_skipped": len(self.skipped),
            "skipped": list(self.skipped),
            "empty_masks": len(self.empty_masks),
        }


# ---------------------------------------------------------------------------------------- probing


@contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make Pillow raise on truncated files while scanning (a user may have turned that off)."""
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _probe(path: Path, decode: bool) -> tuple[tuple[int, int] | None, str | None]:
    """(size, None) for a usable file, (None, reason) otherwise. `decode` reads every pixel."""
    try:
        with Image.open(path) as im:
            if decode:
                im.load()
            return im.size, None
    except Exception as e:  # noqa: BLE001 - any decoder failure means the file is unusable
        return None, f"{type(e).__name__}: {e}"


def _probe_all(paths: list[Path], decode: bool, probe=None) -> list:
    """`_probe` (or `probe(path)`) over many files in threads (Pillow releases the GIL while
    decoding)."""
    workers = max(1, min(16, 2 * (os.cpu_count() or 1), len(paths)))
    fn = probe or (lambda p: _probe(p, decode))
    with _strict_truncation(), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, paths))


def _name_diff(found: list[str], expected: list[str]) -> str:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    parts = [f"missing {missing}" if missing else "", f"extra {extra}" if extra else ""]
    # The same accented name in two Unicode forms (macOS writes decomposed, NFD) prints alike,
    # so "missing ['café'], extra ['café']" alone would not say what to rename.
    nfc = {unicodedata.normalize("NFC", m): m for m in missing}
    parts += [f"{ascii(e)} and {ascii(nfc[k])} differ only in Unicode normalisation (rename one)"
              for e in extra if (k := unicodedata.normalize("NFC", e)) in nfc]
    return ", ".join(p for p in parts if p)


# ----------------------------------------------------------------------------------------- layout


def _list_domains(root: Path, masks_root: Path | None, preset: Preset | None) -> list[str]:
    if not root.exists():
        raise DataError(f"dataset root {root} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset root {root} is not a directory")
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if masks_root is not None:  # a masks folder kept inside the image root is not a domain
        names = [n for n in names if (root / n).resolve() != masks_root.resolve()]
    if not names:
        raise DataError(
            f"dataset root {root} has no domain folders (expected ROOT/<domain>/<class>/<image>)"
        )
    if preset is not None and set(names) != set(preset.domains):
        raise DataError(
            f"{root}: domain folders do not match preset {preset.name!r} "
            f"({_name_diff(names, preset.domains)}); found {names}"
        )
    return names


def _select_domains(found: list[str], wanted: list[str] | None, root: Path) -> list[str]:
    if wanted is None:
        return found
    if not wanted:
        raise DataError(f"{root}: the domain selection is empty; available: {found}")
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        raise DataError(f"{root}: unknown domain(s) {unknown}; available: {found}")
    return [d for d in found if d in set(wanted)]


def _domain_classes(root: Path, domain: str) -> list[str]:
    try:
        classes, _ = find_classes(root / domain)
    except FileNotFoundError:
        classes = []
    classes = [c for c in classes if not c.startswith(".")]
    if not classes:
        raise DataError(f"domain {domain!r} ({root / domain}) is empty: it has no class folders")
    return classes


def _check_classes(root: Path, domains: list[str], preset: Preset | None) -> list[str]:
    """The shared sorted class list; a `DataError` naming each domain whose folders differ."""
    per_domain = {d: _domain_classes(root, d) for d in domains}
    reference = sorted(preset.classes) if preset is not None else per_domain[domains[0]]
    ref_name = f"preset {preset.name!r}" if preset is not None else f"domain {domains[0]!r}"
    problems = [
        f"domain {d!r}: class folder(s) {_name_diff(found, reference)}"
        for d, found in per_domain.items()
        if found != reference
    ]
    if problems:
        raise DataError(
            f"{root}: class folders differ between domains (compared with {ref_name}, classes "
            f"{reference}); labels would shift, so refusing:" + listing(problems)
        )
    return reference


def _collect(root: Path, domains: list[str], classes: list[str]) -> list[Sample]:
    """All image files, sorted by (domain, class, path); error on class folders without images."""
    class_to_idx = {c: i for i, c in enumerate(classes)}

    def is_image(path: str) -> bool:
        rel = Path(path).relative_to(root)
        hidden = any(part.startswith(".") for part in rel.parts)
        return not hidden and has_file_allowed_extension(path, IMG_EXTENSIONS)

    samples: list[Sample] = []
    for d, name in enumerate(domains):
        for c, k in class_to_idx.items():
            # One class at a time: make_dataset raises on an empty class (torchvision < 0.18 has
            # no allow_empty), and _check_nonempty below names every empty one at once.
            try:
                found = make_dataset(root / name, {c: k}, is_valid_file=is_image)
            except FileNotFoundError:
                continue
            samples += [Sample(Path(p).relative_to(root).as_posix(), y, d) for p, y in found]
    samples.sort(key=lambda s: (s.domain, s.label, s.path))
    _check_nonempty(samples, domains, classes, root, reason="without images")
    return samples


def _check_nonempty(samples: list[Sample], domains: list[str], classes: list[str], root: Path,
                    reason: str) -> None:
    have = {(s.domain, s.label) for s in samples}
    empty = [
        f"{dn}/{cn} ({root / dn / cn})"
        for d, dn in enumerate(domains) for k, cn in enumerate(classes) if (d, k) not in have
    ]
    if empty:
        raise DataError(
            f"class folder(s) {reason} (extensions: {', '.join(IMG_EXTENSIONS)}):" + listing(empty)
        )


# ------------------------------------------------------------------------------- images and masks


def _verify_images(root: Path, samples: list[Sample], skip_bad: bool
                   ) -> tuple[list[Sample], list[str], list[tuple[int, int] | None]]:
    """Decode every image; drop or report bad ones. Returns (kept, skipped paths, kept sizes)."""
    results = _probe_all([root / s.path for s in samples], decode=True)
    bad = [(s.path, why) for s, (_, why) in zip(samples, results) if why is not None]
    if bad and not skip_bad:
        raise DataError(
            f"{len(bad)} unreadable or truncated image(s) under {root} "
            "(pass skip_bad_images=True to leave them out):"
            + listing([f"{root / p}: {why}" for p, why in bad])
        )
    kept = [(s, size) for s, (size, why) in zip(samples, results) if why is None]
    return [s for s, _ in kept], [p for p, _ in bad], [size for _, size in kept]


def _with_mask_paths(root: Path, samples: list[Sample], masks_root: Path) -> list[Sample]:
    """`samples` with `mask_path` set (see `align.data.pairing`)."""
    if masks_root.resolve() == root.resolve():
        # Every image would pair with itself and pass every check (same size, decodable), so
        # the photos would silently train as their own (colour channel maximum) masks.
        raise DataError(f"the masks root {masks_root} is the image root itself; pass the "
                        "folder that holds the masks")
    mask_rels = pair_masks([s.path for s in samples], masks_root)
    return [Sample(s.path, s.label, s.domain, m) for s, m in zip(samples, mask_rels)]


def _probe_mask(path: Path) -> tuple[tuple[int, int] | None, str | None, bool]:
    """(size, None, empty) for a usable mask, decoded exactly as training decodes it (so a 0/1
    mask is refused here, at scan time, not mid-training); (None, reason, False) otherwise."""
    try:
        mask = load_mask(path)
    except DataError as e:  # e.g. a 0/1 mask: the message names the file and the fix
        return None, str(e), False
    except Exception as e:  # noqa: BLE001 - any decoder failure means the file is unusable
        return None, f"{path}: unreadable mask ({type(e).__name__}: {e})", False
    return mask.size, None, mask.getextrema()[1] <= 0


def _check_mask_sizes(root: Path, masks_root: Path, samples: list[Sample],
                      image_sizes: list[tuple[int, int] | None], decode: bool) -> list[str]:
    """Every mask must decode as training decodes it (never skipped: it is supervision) and
    match its image's size. Masks are always fully decoded, whatever `decode` says for images.
    Returns the relative paths of the empty masks (no pixel on), which carry no annotation."""
    results = _probe_all([masks_root / str(s.mask_path) for s in samples], True, _probe_mask)
    if any(size is None for size in image_sizes):  # images were not probed yet: read headers
        image_sizes = [size for size, _ in _probe_all([root / s.path for s in samples], False)]
    problems, empty = [], []
    for s, img_size, (mask_size, why, is_empty) in zip(samples, image_sizes, results):
        mask_file = masks_root / str(s.mask_path)
        if why is not None:
            problems.append(why)
        elif img_size is None:
            problems.append(f"{root / s.path}: unreadable image")
        elif mask_size != img_size:
            problems.append(
                f"mask {mask_file} is {mask_size[0]}x{mask_size[1]} but image "
                f"{root / s.path} is {img_size[0]}x{img_size[1]} (width x height)"
            )
        elif is_empty:
            empty.append(str(s.mask_path))
    if problems:
        raise DataError(f"{len(problems)} mask(s) unusable:" + listing(problems))
    if empty:
        log.warning("%d of %d masks under %s are empty (no annotation), e.g. %s", len(empty),
                    len(samples), masks_root, empty[0])
    return empty


# ------------------------------------------------------------------------------------------- scan


def scan_domainbed(
    root: str | os.PathLike,
    *,
    masks_root: str | os.PathLike | None = None,
    preset: str | None = None,
    domains: list[str] | None = None,
    skip_bad_images: bool = False,
    verify_images: bool = True,
) -> DomainFolder:
    """Scan ``root/<domain>/<class>/<image>`` and validate it; see the module docstring.

    Args:
        root: image root. Hidden folders and files (names starting with ".") are ignored.
        masks_root: optional root of masks at the same relative paths (any image extension).
        preset: "vlcs" / "terra_incognita": domain and class folders must equal the preset's.
        domains: keep only these domains (indices then refer to this subset, in sorted order).
        skip_bad_images: leave unreadable images out (listed in `skipped`) instead of failing.
            A class left without images is still an error; bad masks are always errors.
        verify_images: fully decode every image (and mask); False only reads headers where sizes
            are needed (masks), which is much faster but lets broken files through.

    Raises:
        DataError: naming the folder, domain, class or file at fault.
    """
    if preset is not None and preset not in PRESETS:
        raise DataError(f"unknown dataset preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    spec = PRESETS[preset] if preset is not None else None
    root_p = Path(root).expanduser().resolve()
    masks_p = None if masks_root is None else Path(masks_root).expanduser().resolve()
    chosen = _select_domains(_list_domains(root_p, masks_p, spec), domains, root_p)
    classes = _check_classes(root_p, chosen, spec)
    samples = _collect(root_p, chosen, classes)

    sizes: list[tuple[int, int] | None] = [None] * len(samples)
    skipped: list[str] = []
    if verify_images:
        samples, skipped, sizes = _verify_images(root_p, samples, skip_bad_images)
        if skipped:
            log.warning("skipped %d unreadable image(s) under %s", len(skipped), root_p)
            _check_nonempty(samples, chosen, classes, root_p, reason="without readable images")
    empty: list[str] = []
    if masks_p is not None:
        samples = _with_mask_paths(root_p, samples, masks_p)
        empty = _check_mask_sizes(root_p, masks_p, samples, sizes, decode=verify_images)
    return DomainFolder(root_p, masks_p, chosen, classes, samples, skipped, empty)
