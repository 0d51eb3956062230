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


def test_synthetic_configs_cover_the_grid_and_refuse_unknown_domains(tiny_synth, tmp_path):
    cfgs = synthetic_configs(tmp_path, tiny_synth, ["erm", "align"], [0, 1], steps=3)
    assert len(cfgs) == 2 * 4 * 2
    assert cfgs[0].out.endswith("erm/test-noisy/seed0") and cfgs[0].steps == 3
    assert {c.hparams["warmup_steps"] for c in cfgs if c.algorithm == "align"} == {1}
    assert len(synthetic_configs(tmp_path, tiny_synth, ["erm"], [0], test_domains=["photo"])) == 1
    with pytest.raises(ValueError, match="unknown test domain.*mars"):
        synthetic_configs(tmp_path, tiny_synth, ["erm"], [0], test_domains=["mars"])
