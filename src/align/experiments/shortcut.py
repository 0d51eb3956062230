"""Shortcut diagnosis on the synthetic benchmark: do explanations rest on the object or the cue?

The benchmark draws every scene with an exact object mask (`masks/`) and an exact mask of the
misleading cue square (`cues/`). For every finished run under ``OUT/runs/<method>/test-<d>/seed<s>``
(what ``align benchmark`` and ``align mask-quality`` leave there) this scores the classifier's
Grad-CAM against both, with two named evaluations per run (`evaluation-object.json`,
`evaluation-cue.json`, see `align.evaluate`): the energy pointing game (share of the map's energy
inside the mask) and the pointing game (does the map's peak fall inside it), on the held-out
domain. For ALIGN's runs the masker's mean value inside each mask (coverage) and its IoU with
it (threshold 0.5) are reported too.

The cue square covers ~2% of the image and the object several times that, so the scores are not
comparable across the two in absolute terms. The table's first row gives each mask's mean share
of the image over the held-out domains' images: what a map spread evenly over the image would
score on the energy pointing game and what a peak placed at random would score on the pointing
game. Compare each column across methods and against that row; compare the masker's coverage of
a region with its mean over the whole image (a constant mask covers every region equally).

Writes ``OUT/shortcut.md`` and ``OUT/shortcut.json``: per method, mean ± std over its runs.
Evaluations are resumable and reused; ``max_batches`` bounds the images per split.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from .. import io
from ..report.stats import MeanStd, format_mean_std, mean_std
from ..report.writers import markdown_table

#: Each scored region and its mask folder inside the benchmark's data folder.
MASK_FOLDERS = {"object": "masks", "cue": "cues"}
MASKS = tuple(MASK_FOLDERS)
#: (column label, where in a split record, key, masks it is scored against; () = whole image).
COLUMNS = (
    ("Grad-CAM energy", "metrics", "energy_pointing_game", MASKS),
    ("Grad-CAM peak inside", "metrics", "pointing_game", MASKS),
    ("masker coverage", "extras", "masker_coverage", MASKS),
    ("masker mean over the image", "extras", "masker_area", ()),
    ("masker IoU", "extras", "masker_iou", MASKS),
)
#: The reference row: each mask's mean share of the image.
AREA_ROW = "(mask area share: chance level)"


def find_runs(out: Path) -> dict[str, list[Path]]:
    """{method folder: [finished run directories]} under ``out/runs``, sorted."""
    runs: dict[str, list[Path]] = {}
    for done in sorted((out / "runs").glob("*/test-*/seed*/done")):
        runs.setdefault(done.parents[2].name, []).append(done.parent)
    if not runs:
        raise FileNotFoundError(
            f"no finished runs under {out / 'runs'}; run `align benchmark --out {out}` first"
        )
    return runs


def area_shares(data: Path, domains: set[str]) -> dict[str, float]:
    """{"object": mean share, "cue": mean share} of the image covered, over `domains`' images."""
    out = {}
    for part in MASKS:
        root = data / MASK_FOLDERS[part]
        shares = []
        for path in sorted(root.glob("*/*/*.png")):
            if path.parts[-3] in domains:
                with Image.open(path) as im:
                    shares.append(float((np.asarray(im) > 127).mean()))
        out[part] = statistics.fmean(shares) if shares else float("nan")
    return out


def _ood_value(record: dict, where: str, key: str) -> float | None:
    """Mean of one score over the run's out-of-distribution splits (None: not scored)."""
    vals = [s[where][key]["mean"] for s in record["splits"].values()
            if s["role"] == "ood" and key in s.get(where, {}) and s[where][key]["mean"] is not None]
    return statistics.fmean(vals) if vals else None


def run_shortcut(out: Path, *, max_batches: int | None = 4, batch_size: int = 64,
                 console: Console | None = None) -> dict:
    """Evaluate every finished run under `out` against object and cue masks; write the table."""
    from ..evaluate import EvalConfig, evaluate_run

    console = console or Console()
    out = Path(out)
    data = out / "data"
    for part in MASKS:
        folder = data / MASK_FOLDERS[part]
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} not found: the synthetic benchmark in {data} predates cue masks; "
                f"regenerate it with `align synth --out {data} --overwrite` (same images)"
            )
    metrics = [key for _, where, key, _ in COLUMNS if where == "metrics"]
    table: dict = {}
    runs = find_runs(out)
    total, done = sum(len(v) for v in runs.values()), 0
    for method, run_dirs in runs.items():
        per_col: dict[str, list[float]] = {}
        for run in run_dirs:
            done += 1
            console.print(f"[{done}/{total}] {run.relative_to(out)}")
            for part in MASKS:
                # A table, not figures: no example images (n_examples=0).
                record = evaluate_run(run, EvalConfig(
                    masks=data / MASK_FOLDERS[part], name=part, metrics=metrics,
                    max_batches=max_batches, batch_size=batch_size, n_examples=0))
                for label, where, key, parts in COLUMNS:
                    if (part not in parts) if parts else (part != MASKS[0]):
                        continue  # whole-image scores are read once, from the first evaluation
                    value = _ood_value(record, where, key)
                    if value is not None:
                        per_col.setdefault(_column(label, parts, part), []).append(value)
        table[method] = {col: mean_std(v)._asdict() for col, v in per_col.items()}
    held_out = {r.parent.name.removeprefix("test-") for v in runs.values() for r in v}
    areas = area_shares(data, held_out)
    # A property of the data, not a mean over runs: no spread, n = 0.
    reference = {f"{label} ({part})": {"mean": areas[part], "std": None, "n": 0}
                 for label, where, _, _ in COLUMNS if where == "metrics" for part in MASKS}
    table = {AREA_ROW: reference, **table}
    write_outputs(out, table, max_batches, batch_size)
    return table


def _column(label: str, parts: tuple[str, ...], part: str | None) -> str:
    return f"{label} ({part})" if parts else label


def write_outputs(out: Path, table: dict, max_batches: int | None, batch_size: int) -> None:
    cols = [_column(label, parts, p) for label, _, _, parts in COLUMNS for p in (parts or (None,))]
    rows = []
    for method, cells in table.items():
        n = max((c["n"] for c in cells.values()), default=0)
        rows.append([method, n or "-",
                     *(format_mean_std(MeanStd(**c), decimals=3) if (c := cells.get(col)) else "-"
                       for col in cols)])
    io.write_text(out / "shortcut.md", markdown_table(["method", "runs", *cols], rows) + "\n")
    io.write_json(out / "shortcut.json", {"max_batches": max_batches, "batch_size": batch_size,
                                          "split": "held-out domain (ood)", "methods": table})
