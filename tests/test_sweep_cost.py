"""`align sweep --estimate`: step kinds, groups of runs that cost the same, the arithmetic of
device-hours, and nothing written."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from align.algorithms import build_algorithm
from align.experiments import sweep_cost
from align.experiments.sweep_cost import DataShape, GroupCost, data_shape, estimate, evaluations
from align.experiments.sweep_grid import SweepSpec, expand
from test_sweep_grid import TINY, _cli, fake_domainbed


def kinds(name: str, steps: int, **hp) -> Counter:
    algo = build_algorithm(name, backbone="smallcnn", num_classes=2, num_domains=3, hparams=hp,
                           pretrained=None)
    return Counter(algo.step_kind(s) for s in range(steps))


def test_step_kinds_follow_each_algorithms_schedule():
    assert kinds("erm", 5001) == {"classifier": 5001}
    assert kinds("dre", 5001) == {"classifier with Grad-CAM": 5001}
    assert kinds("dre", 10, reg_weight=0.0) == {"classifier": 10}
    # ALIGN's defaults: 2,500 warm-up steps (DRE), 500 masker-only, then both phases, guided
    assert kinds("align", 5001) == {"classifier with Grad-CAM": 2500, "masker": 500,
                                    "masker+classifier with Grad-CAM, guided": 2001}
    assert kinds("align", 5001, masker_every=2) == {
        "classifier with Grad-CAM": 2500, "masker": 500,
        "masker+classifier with Grad-CAM, guided": 1001, "classifier with Grad-CAM, guided": 1000}
    assert kinds("align", 20, guidance="none") == {"classifier with Grad-CAM": 20}


@pytest.mark.parametrize("steps, every, expected", [(5001, 300, 17), (600, 300, 2), (4, 2, 2),
                                                    (5, 2, 3), (1, 300, 1)])
def test_evaluations_are_every_eval_every_steps_and_after_the_last(steps, every, expected):
    from align.config import TrainConfig

    assert evaluations(TrainConfig(data="d", out="o", steps=steps, eval_every=every)) == expected


def test_a_run_costs_its_kinds_times_their_steps_plus_its_evaluations():
    g = GroupCost("align", runs=3, steps=10, kinds={"a": (6, 0.5), "b": (4, 2.0)}, evaluations=5,
                  eval_seconds=1.5, device="cpu", setting="")
    assert g.train_seconds == pytest.approx(6 * 0.5 + 4 * 2.0)
    assert g.run_seconds == pytest.approx(11.0 + 7.5)


def test_loading_adds_to_a_step_without_workers_and_overlaps_with_them():
    base = dict(algorithm="erm", runs=1, steps=10, kinds={"a": (10, 0.5)}, evaluations=2,
                eval_seconds=3.0, device="cpu", setting="", batch=4, images=100)
    assert GroupCost(**base).run_seconds == pytest.approx(10 * 0.5 + 2 * 3.0)  # not timed
    no_workers = GroupCost(**base, load_seconds=0.25, workers=0)
    assert no_workers.train_seconds == pytest.approx(10 * (0.5 + 4 * 0.25))
    assert no_workers.eval_total_seconds == pytest.approx(2 * (3.0 + 100 * 0.25))
    two = GroupCost(**base, load_seconds=0.25, workers=2)  # loading 1.0 s/step, 0.5 per worker
    assert two.train_seconds == pytest.approx(10 * 0.5)
    eight_images = GroupCost(**{**base, "batch": 8}, load_seconds=0.25, workers=2)
    assert eight_images.train_seconds == pytest.approx(10 * 8 * 0.25 / 2)  # loading paces it
    assert eight_images.eval_total_seconds == pytest.approx(2 * max(3.0, 100 * 0.25 / 2))


def test_runs_that_cost_the_same_are_timed_once(tmp_path, monkeypatch):
    data = fake_domainbed(tmp_path / "data", n=2)
    spec = SweepSpec(algorithms=("erm", "align"), domains=("A", "B", "C"),
                     settings={**TINY, "data": str(data), "steps": 7, "eval_every": 3},
                     protocols=("lodo", "single_source"), seeds=(0, 1),
                     base={"align": {"warmup_steps": 2, "masker_warmup_steps": 1}})
    runs = expand(spec, tmp_path / "sweep")
    shape = data_shape(spec)
    assert shape == DataShape(classes=2, images=3 * 2 * 2)
    measured = []
    real = sweep_cost.measure_group
    monkeypatch.setattr(sweep_cost, "measure_group",
                        lambda run, n, *a, **k: measured.append((run.point.algorithm, n))
                        or real(run, n, *a, **k))
    costs = estimate(runs, shape, spec.domains, repeats=1)
    # seeds and cells of one protocol share a group; lodo trains on 2 domains, single_source on 1
    assert measured == [("erm", 2), ("erm", 1), ("align", 2), ("align", 1)]
    assert [c.runs for c in costs] == [6, 6, 6, 6] and sum(c.runs for c in costs) == len(runs)
    erm, align = costs[0], costs[2]
    assert erm.kinds.keys() == {"classifier"} and erm.kinds["classifier"][0] == 7
    assert {k: n for k, (n, _) in align.kinds.items()} == {
        "classifier with Grad-CAM": 2, "masker": 1, "masker+classifier with Grad-CAM, guided": 4}
    assert all(s > 0 for _, s in align.kinds.values()) and align.eval_seconds > 0
    assert erm.evaluations == 3 and "smallcnn at 32 px, 2 x 2 images per step, fp32" == erm.setting
    # the input pipeline, timed once on the folder's images, paces every group alike
    assert erm.load_seconds is not None and erm.load_seconds > 0
    assert {c.load_seconds for c in costs} == {erm.load_seconds}
    assert erm.workers == TINY["num_workers"] and erm.batch == 4 and erm.images == 12


def test_the_estimate_command_prints_device_hours_and_writes_nothing(tmp_path):
    data = fake_domainbed(tmp_path / "data", n=1)
    f = tmp_path / "tiny.yaml"
    f.write_text(json.dumps(TINY))
    out = tmp_path / "sweep"
    result = _cli("sweep", "--out", str(out), "--data", str(data), "--config", str(f),
                  "--algorithms", "erm", "dre", "--seeds", "0", "1", "--estimate")
    assert result.exit_code == 0, result.output
    assert "measured on cpu" in result.output
    assert "total: 12 runs" in result.output and "device-hours" in result.output
    assert not out.exists()
    # a synthetic sweep's estimate does not make its data: the regime's settings give the shape
    result = _cli("sweep", "--out", str(out), "--synthetic", "square-pretrained", "--algorithms",
                  "erm", "--seeds", "0", "--steps", "2", "--estimate")
    assert result.exit_code == 0, result.output
    assert "total: 4 runs" in result.output and not out.exists()
