"""`align check`: does a DomainBed-layout folder hold a known release of a preset dataset?

The folder is scanned as training scans it (`scan_domainbed`: class folders agree across domains,
every image decodes), then its domain and class folder names are compared with the preset and
its image counts with the preset's known releases (`Release`). A release with per-class counts
(VLCS) names the domain and class whose count differs; one with per-domain counts names the
domain; one known by its total only (TerraIncognita's 24,330) is matched by the total, and the
result says that only the total was checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from align.data.decode import DataError
from align.data.folder import scan_domainbed
from align.data.presets import PRESETS, Preset, Release, get_preset


@dataclass(frozen=True)
class CheckResult:
    """A folder that passed: its per-domain, per-class counts and the release they match."""

    root: Path
    preset: str
    counts: dict[str, dict[str, int]]
    release: Release

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def summary(self) -> str:
        """One line: what was found and how closely it was checked."""
        how = self.release.checked
        if self.release.per_domain is None:
            how += " (this release's per-domain counts are not published)"
        return (f"{self.root}: {self.preset}, {len(self.counts)} domains, {self.total:,} images: "
                f"release {self.release.name}, checked {how}")


def check_dataset(root: str | os.PathLike, preset: Preset | str, *,
                  decode: bool = True) -> CheckResult:
    """Check `root` (`ROOT/<domain>/<class>/<image>`) against `preset`.

    Args:
        root: the dataset folder (e.g. `data/VLCS`).
        preset: a `Preset` or its name ("vlcs", "terra_incognita", "pacs", "office_home").
        decode: decode every image (a truncated file fails); False counts files only.

    Returns:
        The counts and the matched release.

    Raises:
        DataError: naming the missing or extra domain / class folders, the unreadable images, or
            the domains and classes whose counts match no known release.
    """
    spec = get_preset(preset) if isinstance(preset, str) else preset
    # No preset here: the names are compared below, against `spec` (which tests may scale down).
    folder = scan_domainbed(root, verify_images=decode)
    for kind, found, expected in (("domain", folder.domains, spec.domains),
                                  ("class", folder.classes, spec.classes)):
        if sorted(found) != sorted(expected):
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            raise DataError(f"{folder.root}: {kind} folders do not match {spec.name} (missing "
                            f"{missing}, extra {extra}); expected {sorted(expected)}")
    counts = folder.counts()
    return CheckResult(folder.root, spec.name, counts, match_release(counts, spec, folder.root))


def match_release(counts: dict[str, dict[str, int]], spec: Preset, where: Path) -> Release:
    """The first release of `spec` that `counts` (domain -> class -> images) matches exactly; a
    `DataError` listing every difference from every release otherwise."""
    if not spec.releases:
        raise DataError(f"preset {spec.name!r} has no known release to compare {where} with")
    reports = []
    for release in spec.releases:
        diffs = _differences(counts, release)
        if not diffs:
            return release
        reports.append(f"release {release.name}:\n    " + "\n    ".join(diffs))
    per_domain = ", ".join(f"{d} {sum(c.values()):,}" for d, c in counts.items())
    total = sum(sum(c.values()) for c in counts.values())
    raise DataError(f"{where}: the image counts match no known release of {spec.name} (found "
                    f"{total:,}: {per_domain}); compared with\n  " + "\n  ".join(reports)
                    + "\na download that stopped half-way or a deleted folder leaves such counts: "
                    "prepare the dataset again (`align prepare`)")


def _differences(counts: dict[str, dict[str, int]], release: Release) -> list[str]:
    """How `counts` differ from `release`, most specific first (class, else domain, else total)."""
    total = sum(sum(c.values()) for c in counts.values())
    if release.per_class is not None:
        return [f"{d}/{c} has {counts[d][c]:,} images, expected {n:,} ({counts[d][c] - n:+,})"
                for d, per in release.per_class.items() for c, n in per.items()
                if counts[d][c] != n]
    if release.per_domain is not None:
        found = {d: sum(c.values()) for d, c in counts.items()}
        return [f"{d} has {found[d]:,} images, expected {n:,} ({found[d] - n:+,}); per class: "
                + ", ".join(f"{c} {k:,}" for c, k in counts[d].items())
                for d, n in release.per_domain.items() if found[d] != n]
    if total != release.total:
        return [f"{total:,} images in all, expected {release.total:,} ({total - release.total:+,}) "
                "(per-domain counts of this release are not published)"]
    return []


def releases_table() -> str:
    """The Markdown table of every preset's known releases and counts (docs/datasets.md)."""
    rows = ["| dataset | release | images | per domain | checked |", "|---|---|---|---|---|"]
    for name, p in PRESETS.items():
        for r in p.releases:
            domains = ("not published" if r.per_domain is None else
                       ", ".join(f"{d} {n:,}" for d, n in r.per_domain.items()))
            rows.append(f"| {name} | {r.name} | {r.total:,} | {domains} | {r.checked} |")
    return "\n".join(rows) + "\n"
