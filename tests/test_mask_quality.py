"""The mask-quality experiment end to end on the tiny benchmark (a few steps per run)."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from align.cli import app
from align.experiments.mask_quality import run_mask_quality


@pytest.fixture
def tiny_settings(monkeypatch):
    """Shrink the quickstart settings the experiment shares, for these tests only."""
    from align.experiments import settings

    monkeypatch.setitem(settings.QUICKSTART_SETTINGS, "image_size", 32)
    monkeypatch.setitem(settings.QUICKSTART_SETTINGS, "batch_size", 4)
    monkeypatch.setitem(settings.QUICKSTART_SETTINGS, "eval_every", 2)
    monkeypatch.setitem(settings.QUICKSTART_SETTINGS, "num_workers", 0)


def test_mask_quality_experiment_writes_table_and_plot(tmp_path, tiny_synth, tiny_settings):
    res = run_mask_quality(tmp_path, method="gradia", seeds=[0], test_domains=["texture"],
                           levels=[1.0, 0.7], steps=2, data=tiny_synth)
    assert list(res) == ["ground truth", "dilate@0.7", "generic segmentation", "ERM", "ALIGN"]
    assert res["ground truth"]["mask_iou"] == 1.0
    assert abs(res["dilate@0.7"]["mask_iou"] - 0.7) < 0.05
    assert res["ERM"]["mask_iou"] is None
    for ext in ("md", "csv", "png", "pdf"):
        assert (tmp_path / f"mask_quality_gradia.{ext}").stat().st_size > 0
    assert not list(tmp_path.glob(".*.tmp.*"))  # plots written atomically
    saved = json.loads((tmp_path / "mask_quality_gradia.json").read_text())
    assert set(saved["result"]["ground truth"]["paired"]) == {"ERM", "ALIGN"}
    assert set(saved["result"]["ERM"]["paired"]) == {"ALIGN"}  # never paired with itself
    assert "paired vs ALIGN" in (tmp_path / "mask_quality_gradia.md").read_text()
    assert saved["result"]["ground truth"]["ood"]["n"] == 1
    # One run has no spread: std null (issue 9: it was 0.0 here, None in the report's tables).
    assert saved["result"]["ground truth"]["ood"]["std"] is None
    # the GRADIA runs were supervised with the degraded folder
    cfg = json.loads((tmp_path / "runs" / "gradia-dilate_0.7" / "test-texture" / "seed0" / "config.json").read_text())
    assert cfg["algorithm"] == "gradia" and cfg["masks"].endswith("dilate_0.7")
    assert (tmp_path / "runs" / "erm" / "test-texture" / "seed0" / "done").exists()


def test_align_as_the_method_replaces_its_masker_by_the_masks(tmp_path, tiny_synth, tiny_settings):
    res = run_mask_quality(tmp_path, method="align", seeds=[0], test_domains=["texture"],
                           levels=[1.0], steps=2, data=tiny_synth)
    runs = tmp_path / "runs"
    fixed = json.loads((runs / "align-ground_truth" / "test-texture" / "seed0" / "config.json").read_text())
    assert fixed["hparams"]["guidance"] == "fixed" and fixed["masks"].endswith("gt")
    # the reference ALIGN run keeps its masker, so `--out` can share benchmark/'s runs
    ref = json.loads((runs / "align" / "test-texture" / "seed0" / "config.json").read_text())
    assert ref["hparams"].get("guidance", "masker") == "masker"
    assert res["ground truth"]["algorithm"] == "align" and (tmp_path / "mask_quality_align.md").exists()


def test_a_method_that_ignores_masks_is_refused(tmp_path):
    res = CliRunner().invoke(app, ["mask-quality", "--out", str(tmp_path / "mq"), "--method", "erm"])
    assert res.exit_code == 2 and "does not learn from masks" in res.output
    assert not (tmp_path / "mq").exists()  # refused before anything is written


def test_paired_difference_known_answer():
    from align.experiments.mask_quality import paired_difference

    runs = {"a/seed0": 0.30, "a/seed1": 0.40, "b/seed0": 0.20, "only-here": 0.9}
    ref = {"a/seed0": 0.25, "a/seed1": 0.30, "b/seed0": 0.30, "only-there": 0.1}
    got = paired_difference(runs, ref)  # pairs: +0.05, +0.10, -0.10
    assert got["n"] == 3 and got["higher"] == 2
    assert got["mean"] == pytest.approx(0.05 / 3)
    # squared deviations from the mean 1/60 sum to 0.065/3; sample std / sqrt(3) is the s.e.
    assert got["se"] == pytest.approx(((0.065 / 3) / 2) ** 0.5 / 3 ** 0.5)


def test_outputs_quote_csv_cells_and_escape_markdown_cells(tmp_path):
    """Regression (issue 9): the CSV was joined by hand, so a label holding a comma or a quote
    shifted every later column; now the csv module quotes it (and Markdown escapes a `|`)."""
    from align.experiments.mask_quality import write_outputs

    label = 'ground truth, "exact" | v2'
    result = {
        label: {"algorithm": "gradia", "mask_iou": 1.0, "ood": {"mean": 0.5, "std": 0.02, "n": 2},
                "per_run": {"texture/seed0": 0.5},
                "paired": {"ERM": {"mean": 0.1, "se": 0.01, "higher": 2, "n": 2}}},
        "ERM": {"algorithm": "erm", "mask_iou": None, "ood": {"mean": 0.4, "std": 0.01, "n": 2},
                "per_run": {"texture/seed0": 0.4}, "paired": {}},
    }
    write_outputs(tmp_path, result, "gradia", ["texture"], [0])
    with (tmp_path / "mask_quality_gradia.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["guidance"] for r in rows] == [label, "ERM"]
    assert rows[0]["ood_std"] == "0.020000" and rows[0]["vs_erm_mean"] == "0.100000"
    assert rows[0]["vs_align_mean"] == "" and rows[1]["ood_std"] == "0.010000"
    md = (tmp_path / "mask_quality_gradia.md").read_text().splitlines()
    assert md[2].startswith(
        '| ground truth, "exact" \\| v2 | gradia | 1.000 | 50.0 ± 2.0 | +10.0 (s.e. 1.0')
    assert md[3].startswith("| ERM | erm | - | 40.0 ± 1.0 |")


@pytest.mark.parametrize("algorithm", ["erm", "align"])
def test_reference_runs_have_the_benchmarks_config(tmp_path, tiny_synth, algorithm):
    """`--out` shared with `align benchmark` reuses its ERM and ALIGN runs: both experiments
    build the same config for them (the benchmark's cue scores `eval_masks` included; a
    regression left them out here, and mask-quality refused the benchmark's runs as "another
    configuration")."""
    from align.experiments.mask_quality import _config
    from align.sweep import synthetic_configs

    bench = {c.out: c for c in synthetic_configs(tmp_path, tiny_synth, [algorithm], [0], steps=2,
                                                  test_domains=["texture"])}
    (bench_config,) = bench.values()
    mine = _config(tiny_synth, tiny_synth / "masks", Path(bench_config.out),
                   algorithm, "texture", 0, 2, supervised=False)
    assert mine.to_dict() == bench_config.to_dict()
