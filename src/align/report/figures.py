"""The report's figures (matplotlib's object API with the Agg canvas; PNG and PDF, atomic writes).

- `examples_figure`: a grid, one row per test image (the same images for every method): the
  image | each method's saliency map as its evaluation scored it (by default the Grad-CAM of the
  predicted class), overlaid | each ALIGN masker's mask | the ground-truth mask. Drawn from the
  examples.npz that `align evaluate` saved beside each evaluation.json (no network is loaded); a
  method none of whose runs shows the same images as the others is left out with a note.
- `curves_figure`: mean deletion and insertion curves per method (mean over seeds, band = ±1 std
  over seeds), from evaluation.json; one row per role (out-of-distribution, in-distribution).
- `training_figure`: every loss term logged in results.jsonl (and the validation accuracy)
  against the step, one line per run of a method.

Every function returns `(figure or None, notes)`; a note says what was left out and why.
"""

from __future__ import annotations

import hashlib
import io as _io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import io
from ..rundir import Examples, RunFiles
from .collect import Method, RunRecord, Setting

ROLE_NAMES = {"ood": "out-of-distribution", "in_domain": "in-distribution"}


@dataclass(frozen=True)
class FigureFile:
    png: str  # path relative to the report folder
    pdf: str
    caption: str


def text(name: object) -> str:
    """A user's name (domain, class, method, run) as matplotlib text: between two "$" it would
    be parsed as mathtext, mangled or refused (a backslash there fails the figure); "\\$" is a
    literal dollar sign."""
    return str(name).replace("$", r"\$")


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


#: Longest file stem in bytes: a stem names every domain of its setting, and file systems refuse
#: names over 255 bytes (the atomic write's temporary name adds about 20).
MAX_STEM_BYTES = 160


def file_stem(stem: str) -> str:
    """`stem`, or when it is too long its first bytes and a hash of the whole (still unique)."""
    raw = stem.encode()
    if len(raw) <= MAX_STEM_BYTES:
        return stem
    head = raw[:MAX_STEM_BYTES - 9].decode(errors="ignore")  # never half a UTF-8 character
    return f"{head}-{hashlib.sha256(raw).hexdigest()[:8]}"


def save(fig, out_dir: Path, stem: str, caption: str) -> FigureFile:
    """Write `figures/<stem>.png` and `.pdf` under out_dir, each atomically (`file_stem`)."""
    stem = file_stem(stem)
    names = {}
    for fmt, dpi in (("png", 110), ("pdf", None)):
        buf = _io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=_metadata(fmt))
        rel = f"figures/{stem}.{fmt}"
        io.write_bytes(out_dir / rel, buf.getvalue())
        names[fmt] = rel
    return FigureFile(names["png"], names["pdf"], caption)


def _metadata(fmt: str) -> dict:
    # No creation date in the PDF, so that regenerating a report does not change unchanged figures.
    return {"CreationDate": None} if fmt == "pdf" else {}


def _color(i: int):
    from matplotlib import colormaps

    return colormaps["tab10"](i % 10)


# ------------------------------------------------------------------ examples
def _explainer_title(config: dict) -> str:
    name = {"gradcam": "Grad-CAM"}.get(config["explainer"], config["explainer"].replace("_", " "))
    return name + (" (label)" if config.get("explain_class") == "label" else "")


def _examples(setting: Setting) -> tuple[list[tuple[Method, RunRecord, Examples]], list[str]]:
    """Per method, a run whose saved examples show the same images as the first method's
    (runs of one seed share their splits), and notes on the methods left out."""
    chosen: list[tuple[Method, RunRecord, Examples]] = []
    notes = []
    for m in setting.methods:
        found = None
        for run in m.runs:
            if run.evaluation is None:  # a run of a folder, not evaluated (`make_report`)
                continue
            ex = RunFiles(run.path).examples()
            if ex is not None and (not chosen or (ex.split == chosen[0][2].split and
                                                  np.array_equal(ex.paths, chosen[0][2].paths))):
                found = (m, run, ex)
                break
        if found is None:
            notes.append(f"examples: {m.label} left out (no run evaluated with examples of the "
                         "images the other methods show: another seed or evaluation size?)")
        else:
            chosen.append(found)
    return chosen, notes


def examples_figure(setting: Setting, out_dir: Path, n: int | None = None
                    ) -> tuple[FigureFile | None, list[str]]:
    chosen, notes = _examples(setting)
    if not chosen:
        return None, notes + [f"examples figure of {setting.title} skipped: no run was "
                              "evaluated with examples (n_examples=0)"]
    ref = chosen[0][2]
    rows = slice(0, len(ref.paths) if n is None else n)
    labels = list(ref.labels[rows])
    columns: list[tuple[str, list]] = []  # (title, per-image (map, caption, colour))
    for m, run, ex in chosen:
        preds = list(ex.predictions[rows])
        columns.append((f"{m.label}\n{_explainer_title(run.evaluation['config'])}",
                        [(h, p, "green" if p == y else "red")
                         for h, p, y in zip(ex.saliency[rows], preds, labels)]))
        if ex.masker is not None:
            columns.append((f"{m.label}\nmasker", [(h, None, None) for h in ex.masker[rows]]))
    if ref.gt is not None:
        columns.append(("ground truth", [(h, None, None) for h in ref.gt[rows]]))
    fig = _examples_grid(ref.images[rows], labels, columns)
    caption = (f"Test images of {ref.split} ({setting.title}): each method's saliency map as its "
               "evaluation scored it (prediction below, green if correct), masker masks and "
               "ground truth.")
    return save(fig, out_dir, f"examples-{setting.slug}", caption), notes


def _examples_grid(images: np.ndarray, labels: list[str], columns: list[tuple[str, list]]):
    rows, cols = len(images), 1 + len(columns)
    fig = new_figure(1.5 * cols, 1.5 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        axes[i, 0].imshow(images[i])
        axes[i, 0].set_ylabel(text(labels[i]), fontsize=8)
        for j, (title, cells) in enumerate(columns, 1):
            heat, caption, colour = cells[i]
            heat = np.asarray(heat, dtype=np.float32)
            ax = axes[i, j]
            if caption is not None:  # a saliency map, over the image, at its own scale
                ax.imshow(images[i])
                ax.imshow(heat / max(float(heat.max()), 1e-12), cmap="jet", alpha=0.5, vmin=0,
                          vmax=1)
                ax.set_xlabel(text(f"pred: {caption}"), fontsize=7, color=colour, labelpad=1)
            else:
                ax.imshow(heat, cmap="gray", vmin=0, vmax=1)
            if i == 0:
                ax.set_title(text(title), fontsize=8)
        axes[0, 0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


# ------------------------------------------------------------------ curves
def _method_curves(method: Method, role: str, metric: str):
    """(fractions, per-seed mean curves [S, F]) of a method, or None."""
    per_seed: dict[int, list[np.ndarray]] = {}
    fractions = None
    for run in method.runs:
        for split in (run.evaluation or {"splits": {}})["splits"].values():
            c = split.get("curves", {}).get(metric)
            if split["role"] != role or c is None:
                continue
            if fractions is None:
                fractions = c["fractions"]
            if c["fractions"] == fractions:
                per_seed.setdefault(run.seed, []).append(np.asarray(c["mean"], dtype=float))
    if not per_seed:
        return None
    return np.asarray(fractions), np.stack([np.mean(v, axis=0) for _, v in sorted(per_seed.items())])


def curves_figure(setting: Setting, out_dir: Path) -> tuple[FigureFile | None, list[str]]:
    metrics = ("deletion", "insertion")
    roles = [r for r in ROLE_NAMES if any(_method_curves(m, r, "insertion") is not None
                                          for m in setting.methods)]
    if not roles:
        return None, [f"curves of {setting.title} skipped: no evaluation.json with curves"]
    fig = new_figure(8, 3.2 * len(roles))
    axes = fig.subplots(len(roles), 2, squeeze=False)
    for i, role in enumerate(roles):
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            for k, m in enumerate(setting.methods):
                got = _method_curves(m, role, metric)
                if got is None:
                    continue
                f, curves = got
                mean = curves.mean(axis=0)
                auc = float(np.sum((mean[1:] + mean[:-1]) / 2 * np.diff(f)))  # trapezoid rule
                ax.plot(f, mean, color=_color(k), label=text(f"{m.label} (AUC {100 * auc:.1f})"))
                if len(curves) > 1:
                    std = curves.std(axis=0, ddof=1)
                    ax.fill_between(f, mean - std, mean + std, color=_color(k), alpha=0.2, lw=0)
            better = "lower" if metric == "deletion" else "higher"
            ax.set_title(f"{metric}, {ROLE_NAMES[role]} ({better} AUC is better)", fontsize=9)
            ax.set_xlabel("fraction of pixels " + ("removed" if metric == "deletion" else "inserted"))
            ax.set_ylabel("p(predicted class)")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    caption = (f"Deletion and insertion curves ({setting.title}): mean over images and seeds; "
               "band: ±1 std over seeds.")
    return save(fig, out_dir, f"curves-{setting.slug}", caption), []


# ------------------------------------------------------------------ training curves
def training_figure(method: Method, setting: Setting, out_dir: Path
                    ) -> tuple[FigureFile | None, list[str]]:
    runs = [r for r in method.runs if r.results]
    if not runs:
        return None, [f"training curves of {method.label} skipped: empty results.jsonl"]
    terms = list(dict.fromkeys(k for r in runs for rec in r.results for k in rec.get("losses", {})))
    # Evaluation scores (ALIGN: the masker's area, IoU and coverage of the object, and of the
    # cue where `eval_masks` has one), averaged over the validation splits like the accuracy.
    scores = list(dict.fromkeys(k for r in runs for rec in r.results for k in rec.get("eval", {})))
    panels = terms + [f"eval: {k}" for k in scores] + ["validation accuracy"]
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(3.0 * ncols, 2.4 * nrows + 0.3)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for k, run in enumerate(runs):
        steps = [rec["step"] for rec in run.results]
        val_keys = run.protocol["val_keys"]
        for ax, term in zip(axes, panels):
            if term == "validation accuracy":
                ys = [np.mean([rec["acc"][v] for v in val_keys]) for rec in run.results]
            elif term.startswith("eval: "):
                name = term.removeprefix("eval: ")
                ys = [np.mean([rec.get("eval", {}).get(name, {}).get(v, np.nan) for v in val_keys])
                      for rec in run.results]
            else:
                ys = [rec.get("losses", {}).get(term, np.nan) for rec in run.results]
            ax.plot(steps, ys, marker=".", color=_color(k), label=text(run.name()))
    # Where the warm-up ends (ALIGN: guidance starts); selection never picks a step before it.
    starts = {r.summary.get("objective_start", 0) for r in runs}
    for ax, term in zip(axes, panels):
        for start in sorted(starts - {0}):
            ax.axvline(start, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.axes[0].legend(fontsize=6)
    fig.suptitle(text(f"{method.label}: training ({setting.title})"), fontsize=10)
    slug = "".join(ch if ch.isalnum() else "_" for ch in method.label).strip("_")
    caption = (f"Training curves of {method.label}: mean loss terms between evaluations, "
               "evaluation scores and validation accuracy (means over the training domains' "
               "validation splits), one line per run; dashed: end of the warm-up (ALIGN: "
               "guidance starts).")
    return save(fig, out_dir, f"training-{setting.slug}-{slug}", caption), []
