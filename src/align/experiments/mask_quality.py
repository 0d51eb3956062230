"""The paper's preliminary finding, on the synthetic benchmark: guidance from worse masks.

Mask-supervised training (GRADIA by default) with masks of decreasing quality — ground truth
(IoU 1.0), ground truth dilated to target IoUs (dilation mimics the paper's SAM masks that take in
the object's surroundings), and the task-blind generic segmentation — against ERM and ALIGN as
reference lines. Quickstart settings, leave-one-domain-out, several seeds. Writes
`mask_quality_<method>.md`, `.csv`, `.json` and a plot (`.png`, `.pdf`) of out-of-domain accuracy
against mask IoU. Runs resume; mask folders are built once (cached).

Any algorithm that learns from masks can be the method. ``align`` means ALIGN with the external
masks in place of its masker (``guidance: fixed``, the paper's m-SAM ablation with masks of a
chosen quality): its ground-truth row says what ALIGN's classifier objective does with perfect
masks, which separates the objective from the quality of the masker's masks.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .. import io
from ..algorithms import ALGORITHMS
from ..config import TrainConfig
from ..masks import build_mask_folder, read_record
from ..report.stats import MeanStd, format_mean_std, mean_std
from ..report.writers import csv_table, markdown_table
from ..rundir import RunFiles
from .settings import QUICKSTART_SETTINGS, cue_scores, ensure_data, quickstart_hparams


def build_masks(data: Path, out: Path, levels: list[float], kind: str) -> dict[str, tuple[Path, float]]:
    """{label: (mask folder, mean IoU with the truth)} for every mask quality of the experiment."""
    images, gt = data / "images", data / "masks"
    folders = {}
    for level in levels:
        label = f"{kind}@{level:g}"
        if level >= 1.0:
            root = build_mask_folder(images, out / "gt", "ground_truth", gt_root=gt)
            label = "ground truth"
        else:
            root = build_mask_folder(images, out / f"{kind}_{level:g}", "degraded", gt_root=gt,
                                     params={"kind": kind, "target_iou": level})
        folders[label] = (root, read_record(root)["mean_iou"])
    root = build_mask_folder(images, out / "generic", "generic", gt_root=gt)
    folders["generic segmentation"] = (root, read_record(root)["mean_iou"])
    return folders


#: Hyperparameters that make an algorithm learn from the external masks of the experiment.
SUPERVISED_HPARAMS: dict[str, dict] = {"align": {"guidance": "fixed"}}


def check_method(method: str) -> None:
    """Refuse an algorithm that would ignore the masks (the experiment would be meaningless)."""
    if not ALGORITHMS.get(method).needs_masks(SUPERVISED_HPARAMS.get(method, {})):
        raise ValueError(
            f"algorithm {method!r} does not learn from masks, so mask quality cannot affect it; "
            "choose a mask-supervised one (e.g. gradia, haics, rrr, res_g, align)"
        )


def output_stem(method: str) -> str:
    """Base name of the experiment's table, data and plot for one method."""
    return f"mask_quality_{method}"


def _run_folder(label: str, algorithm: str, supervised: bool) -> str:
    """`gradia-dilate_0.9` for mask-supervised runs; the bare algorithm name for the references,
    so that `--out` shared with `align benchmark` reuses its ERM and ALIGN runs (same configs)."""
    if not supervised:
        return algorithm
    return f"{algorithm}-" + label.replace(" ", "_").replace("@", "_")


def _config(data: Path, masks: Path, out: Path, algorithm: str, domain: str, seed: int,
            steps: int, supervised: bool) -> TrainConfig:
    settings = {**QUICKSTART_SETTINGS, "steps": steps}
    hparams = quickstart_hparams(algorithm, steps)
    if supervised:
        hparams.update(SUPERVISED_HPARAMS.get(algorithm, {}))
    return TrainConfig(
        data=str(data / "images"), masks=str(masks), out=str(out), algorithm=algorithm,
        protocol="lodo", test_domains=[domain], seed=seed, hparams=hparams, **settings,
        **cue_scores(data),
    )


def _ood(run: Path) -> float:
    return RunFiles(run).summary()["training_domain_validation"]["test_acc"]


def run_mask_quality(out: Path, *, method: str = "gradia", seeds: list[int] = (0, 1, 2),
                     test_domains: list[str] | None = None, levels: list[float] = (1.0, 0.9, 0.8),
                     kind: str = "dilate", steps: int | None = None, data: Path | None = None,
                     console: Console | None = None) -> dict:
    """Run the experiment into `out` (data generated there unless `data`, a synthetic benchmark
    folder with images/ and masks/, is given); returns {guidance label: result}."""
    from ..training.loop import Trainer
    from ..ui import progress_bar

    check_method(method)
    console = console or Console()
    out = Path(out)
    steps = steps or QUICKSTART_SETTINGS["steps"]
    data = Path(data) if data is not None else ensure_data(out / "data", 0, console)
    domains = test_domains or sorted(p.name for p in (data / "images").iterdir() if p.is_dir())
    console.print("building mask folders (cached) ...")
    folders = build_masks(data, out / "masks", list(levels), kind)
    jobs = [(label, method, root) for label, (root, _) in folders.items()]
    jobs += [("ERM", "erm", data / "masks"), ("ALIGN", "align", data / "masks")]
    result: dict = {}
    for label, algo, masks in jobs:
        per_run = {}
        for d in domains:
            for s in seeds:
                supervised = label in folders
                run = out / "runs" / _run_folder(label, algo, supervised) / f"test-{d}" / f"seed{s}"
                cfg = _config(data, masks, run, algo, d, s, steps, supervised)
                with progress_bar(cfg.steps, f"{label} {d} seed {s}", console) as prog:
                    Trainer(cfg, prog).run()
                per_run[f"{d}/seed{s}"] = _ood(run)
        iou = folders[label][1] if label in folders else None
        result[label] = {"algorithm": algo, "mask_iou": iou,
                         "ood": mean_std(per_run.values())._asdict(),
                         "per_run": per_run}
    for label, r in result.items():
        r["paired"] = {ref: paired_difference(r["per_run"], result[ref]["per_run"])
                       for ref in ("ERM", "ALIGN") if ref != label}
    write_outputs(out, result, method, domains, list(seeds))
    return result


def paired_difference(runs: dict[str, float], reference: dict[str, float]) -> dict:
    """`runs - reference` over the (held-out domain, seed) pairs both have.

    Pairing removes what the two share: how hard the held-out domain is and, through the seed,
    the split and data order. Returns the mean difference, its standard error (None for one pair,
    the rule of `report.stats.mean_std`) and how many pairs favour `runs`; with no pair, mean
    and se are None.
    """
    diffs = [runs[k] - reference[k] for k in runs if k in reference]
    if not diffs:
        return {"mean": None, "se": None, "higher": 0, "n": 0}
    m = mean_std(diffs)
    return {"mean": m.mean, "se": None if m.std is None else m.std / m.n ** 0.5,
            "higher": sum(x > 0 for x in diffs), "n": m.n}


def paired_cell(p: dict | None) -> str:
    """"+6.1 (s.e. 2.0; 5/6 higher)" in points, "-" without pairs."""
    if p is None or not p["n"]:
        return "-"
    se = "" if p["se"] is None else f"s.e. {100 * p['se']:.1f}; "
    return f"{100 * p['mean']:+.1f} ({se}{p['higher']}/{p['n']} higher)"


def write_outputs(out: Path, result: dict, method: str, domains: list[str], seeds: list[int]) -> None:
    md_head = ["guidance", "algorithm", "mask IoU",
               f"OOD accuracy % (mean ± std over {len(seeds)} seeds x {len(domains)} held-out "
               "domains)", "paired vs ERM", "paired vs ALIGN"]
    csv_head = ["guidance", "algorithm", "mask_iou", "ood_mean", "ood_std", "n", "vs_erm_mean",
                "vs_erm_se", "vs_align_mean", "vs_align_se"]
    md_rows, csv_rows = [], []
    for label, r in result.items():
        iou = "-" if r["mask_iou"] is None else f"{r['mask_iou']:.3f}"
        o, paired = r["ood"], r.get("paired", {})
        erm, aln = paired.get("ERM"), paired.get("ALIGN")
        md_rows.append([label, r["algorithm"], iou, format_mean_std(MeanStd(**o), 100),
                        paired_cell(erm), paired_cell(aln)])
        refs = [f"{p[k]:.6f}" if p and p[k] is not None else "" for p in (erm, aln)
                for k in ("mean", "se")]
        csv_rows.append([label, r["algorithm"], "" if r["mask_iou"] is None else r["mask_iou"],
                         f"{o['mean']:.6f}", "" if o["std"] is None else f"{o['std']:.6f}", o["n"],
                         *refs])
    stem = output_stem(method)
    io.write_text(out / f"{stem}.md", markdown_table(md_head, md_rows) + "\n")
    io.write_text(out / f"{stem}.csv", csv_table(csv_head, csv_rows))
    io.write_json(out / f"{stem}.json",
                  {"method": method, "domains": domains, "seeds": seeds, "result": result})
    plot(out, result, method)


def plot(out: Path, result: dict, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A single run has no spread to draw (std None): no error bar, no band.
    pts = sorted((r["mask_iou"], r["ood"]["mean"], r["ood"]["std"] or 0.0, k)
                 for k, r in result.items() if r["mask_iou"] is not None)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    what = "ALIGN's objective (masker replaced)" if method == "align" else method
    ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                marker="o", capsize=3, label=f"{what} with masks of this IoU")
    for i, (x, y, _, k) in enumerate(pts):
        # Alternate above / below: neighbouring IoUs are close enough for labels to collide.
        ax.annotate(k, (x, 100 * y), textcoords="offset points", xytext=(4, 6 if i % 2 else -11),
                    fontsize=7)
    for name, style in (("ERM", "--"), ("ALIGN", "-")):
        if name in result:
            m, s = 100 * result[name]["ood"]["mean"], 100 * (result[name]["ood"]["std"] or 0.0)
            ax.axhline(m, linestyle=style, color="grey" if name == "ERM" else "tab:red", label=f"{name} (no external masks)")
            ax.axhspan(m - s, m + s, color="grey" if name == "ERM" else "tab:red", alpha=0.1)
    ax.set_xlabel("mask IoU with the ground truth")
    ax.set_ylabel("out-of-domain accuracy (%)")
    ax.set_title("Guidance from masks of decreasing quality (synthetic)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    stem = output_stem(method)
    for ext in ("png", "pdf"):
        tmp = out / f".{stem}.tmp.{ext}"
        fig.savefig(tmp, dpi=150)
        tmp.replace(out / f"{stem}.{ext}")
    plt.close(fig)
