"""Aggregation of a sweep's runs (pure function of run directories; golden runs as input)."""

import json
import statistics
from pathlib import Path

import pytest

from align.sweep import aggregate, markdown_table, synthetic_configs

GOLDEN = Path(__file__).parent / "golden" / "runs"


def _test_acc(run):
    return json.loads((run / "summary.json").read_text())["training_domain_validation"]["test_acc"]


def test_aggregate_mean_and_std_over_seeds():
    runs = [GOLDEN / a / f"seed{s}" for a in ("erm", "align") for s in (0, 1)]
    agg = aggregate(runs)
    assert list(agg) == ["erm", "align"]
    accs = [_test_acc(GOLDEN / "erm" / f"seed{s}") for s in (0, 1)]
    mean, std, n = agg["erm"]["texture"]["ood"]
    assert n == 2 and mean == pytest.approx(statistics.fmean(accs)) and std == pytest.approx(statistics.stdev(accs))
    table = markdown_table(agg)
    assert table.splitlines()[0].startswith("| algorithm | texture | avg |")
    assert f"{100 * mean:.1f} ± {100 * std:.1f}" in table


def test_one_seed_has_no_std_and_the_results_are_strict_json():
    """Regression (issue 9): one seed gave std 0.0 here ("25.6 ± 0.0", a spread the run cannot
    show) but no std in the report's tables; and a method without masker scores wrote NaN,
    which is not JSON. Now one rule (`report.stats.mean_std`): std None, shown as the mean."""
    agg = aggregate([GOLDEN / "erm" / "seed0"])
    mean, std, n = agg["erm"]["texture"]["ood"]
    assert n == 1 and std is None and agg["erm"]["avg"]["ood"].std is None
    assert f"| {100 * mean:.1f} | {100 * mean:.1f} |" in markdown_table(agg)
    json.dumps(agg, allow_nan=False)  # no NaN anywhere (ERM has no masker IoU)


def test_synthetic_configs_cover_the_grid_and_refuse_unknown_domains(tiny_synth, tmp_path):
    cfgs = synthetic_configs(tmp_path, tiny_synth, ["erm", "align"], [0, 1], steps=3)
    assert len(cfgs) == 2 * 4 * 2
    assert cfgs[0].out.endswith("erm/test-noisy/seed0") and cfgs[0].steps == 3
    assert {c.hparams["warmup_steps"] for c in cfgs if c.algorithm == "align"} == {1}
    assert len(synthetic_configs(tmp_path, tiny_synth, ["erm"], [0], test_domains=["photo"])) == 1
    with pytest.raises(ValueError, match="unknown test domain.*mars"):
        synthetic_configs(tmp_path, tiny_synth, ["erm"], [0], test_domains=["mars"])


def test_overrides_and_shards_are_parsed_with_clear_errors():
    from align.sweep import parse_overrides, parse_shard, variant_label

    assert parse_overrides(["sparsity_weight=1.0", "fill=blur"], ["align"]) == {
        "sparsity_weight": 1.0, "fill": "blur"}
    assert variant_label("align", {"sparsity_weight": 1.0, "fill": "blur"}) == \
        "align-fill=blur-sparsity_weight=1.0"
    assert variant_label("erm", {}) == "erm"
    # the shared hyperparameters are hyperparameters of every algorithm (issue 11's "erm has no
    # hyperparameter lr")
    assert parse_overrides(["lr=0.001", "weight_decay=0"], ["erm", "align"]) == {
        "lr": 0.001, "weight_decay": 0}
    with pytest.raises(ValueError, match="erm has no hyperparameter sparsity_weight"):
        parse_overrides(["sparsity_weight=1"], ["align", "erm"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["lr"], ["erm"])
    with pytest.raises(ValueError, match="plain numbers or words"):
        variant_label("erm", {"lr": "1e-3/../x"})
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "1-4", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_sharded_sweep_with_a_variant_then_one_table(tiny_synth, tmp_path, monkeypatch):
    import shutil

    from align.experiments import settings
    from align.sweep import run_synthetic_benchmark

    for key, value in (("image_size", 32), ("batch_size", 4), ("eval_every", 2), ("num_workers", 0)):
        monkeypatch.setitem(settings.QUICKSTART_SETTINGS, key, value)
    out = tmp_path / "bench"
    shutil.copytree(tiny_synth, out / "data")  # seed 0, current version: used as is
    kw = dict(algorithms=["erm"], seeds=[0, 1], steps=2, test_domains=["texture", "photo"],
              overrides={"lr": 0.01})
    assert run_synthetic_benchmark(out, shard=(0, 3), **kw) is None
    runs = out / "runs" / "erm-lr=0.01"
    done = sorted(str(p.parent.relative_to(runs)) for p in runs.glob("*/*/done"))
    assert done == ["test-photo/seed0", "test-texture/seed1"]  # grid positions 0 and 3 of 4
    assert not (out / "results.md").exists()
    run_synthetic_benchmark(out, shard=(1, 3), **kw)
    run_synthetic_benchmark(out, shard=(2, 3), **kw)
    assert len(list(runs.glob("*/*/done"))) == 4
    cfg = json.loads((runs / "test-photo" / "seed0" / "config.json").read_text())
    assert cfg["hparams"]["lr"] == 0.01
    agg = run_synthetic_benchmark(out, **kw)  # every run done: only the table
    assert list(agg) == ["erm-lr=0.01"] and agg["erm-lr=0.01"]["texture"]["ood"][2] == 2
    assert "| erm-lr=0.01 |" in (out / "results-lr=0.01.md").read_text()
    assert not (out / "results.md").exists()  # the defaults' table is never replaced by a variant's


def test_benchmark_set_lr_from_the_command_line(tmp_path, monkeypatch):
    """Issue 11: `align benchmark --set lr=0.001` failed ("erm has no hyperparameter lr"). The
    benchmark is now a preset of `align sweep`: its grid checks every value before writing."""
    from typer.testing import CliRunner

    import align.regimes as regimes
    from align.cli import app, expand_multi
    from align.experiments import settings

    from conftest import TINY

    monkeypatch.setattr(regimes, "DEFAULT_CONFIG", TINY)
    for key, value in (("image_size", 32), ("batch_size", 4), ("eval_every", 2), ("num_workers", 0)):
        monkeypatch.setitem(settings.QUICKSTART_SETTINGS, key, value)
    out = tmp_path / "bench"
    args = ["benchmark", "--out", str(out), "--regime", "square-scratch", "--algorithms", "erm",
            "--seeds", "0", "--steps", "2", "--test-domains", "texture"]
    bad = CliRunner().invoke(app, expand_multi(args + ["--set", "lr=-1"]))
    assert bad.exit_code == 2 and "hyperparameter 'lr' must be > 0, got -1" in bad.output
    assert not out.exists()
    result = CliRunner().invoke(app, expand_multi(args + ["--set", "lr=0.001"]))
    assert result.exit_code == 0, result.output
    regime = out / "square-scratch"
    run = regime / "runs" / "erm-lr=0.001" / "test-texture" / "seed0"
    assert json.loads((run / "config.json").read_text())["hparams"]["lr"] == 0.001
    assert "| erm-lr=0.001 |" in (regime / "results-lr=0.001.md").read_text()
    manifest = json.loads((regime / "sweep.json").read_text())
    assert [r["dir"] for r in manifest["runs"]] == ["runs/erm-lr=0.001/test-texture/seed0"]
