"""Training presets (`--preset`), the `val_loss` selection criterion and the `selection` config key."""

from __future__ import annotations

import dataclasses
import io as _io
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from align import io
from align.algorithms import ALGORITHMS
from align.cli import app
from align.config import FIELDS, TrainConfig, make_config
from align.hparams import resolve
from align.training.presets import PRESETS
from align.training.loop import Trainer
from align.training.rundir import RunDir
from align.training.selection import SELECTION_METHODS, summarize, val_loss
from align.ui import print_summary

from conftest import tiny_config

GOLDEN = Path(__file__).parent / "golden" / "runs" / "erm" / "seed0"
VAL = ["A_out", "C_out"]
PROTO = {"val_keys": VAL, "test_keys": ["B_in"]}


def _rec(step, ce_a, ce_c, acc=0.5):
    return {"step": step, "acc": {"A_out": acc, "C_out": acc, "B_in": 0.1 * step},
            "ce": {"A_out": ce_a, "C_out": ce_c, "B_in": 9.0}, "n": {"A_out": 100, "C_out": 10, "B_in": 50}}


# ------------------------------------------------------------------ val_loss


def test_val_loss_is_size_weighted_and_picks_another_record_than_the_unweighted_mean():
    recs = [_rec(1, 0.5, 2.0), _rec(2, 0.8, 0.3), _rec(3, 0.5, 2.0)]
    # Size-weighted: (100 * 0.5 + 10 * 2.0) / 110 = 0.636 vs (80 + 3) / 110 = 0.755; the plain
    # mean of the two splits would prefer step 2 (1.25 vs 0.55).
    assert val_loss(recs[0], VAL) == pytest.approx(70 / 110)
    assert val_loss(recs[1], VAL) == pytest.approx(83 / 110)
    assert SELECTION_METHODS.get("val_loss").select(recs, VAL)["step"] == 1  # step 3 ties: the earlier record wins
    s = summarize(recs, PROTO)
    assert s["val_loss"]["step"] == 1 and s["val_loss"]["test_acc"] == pytest.approx(0.1)
    assert s["val_loss"]["val_loss"] == pytest.approx(70 / 110)
    assert s["last"]["val_loss"] == pytest.approx(70 / 110)
    assert list(s) == ["objective_start", "training_domain_validation", "val_loss", "last"]
    assert not SELECTION_METHODS.get("val_loss").higher_is_better
    assert SELECTION_METHODS.get("training_domain_validation").higher_is_better


def test_records_without_ce_are_skipped_and_old_runs_still_summarise():
    old = {k: v for k, v in _rec(1, 0.1, 0.1).items() if k not in ("ce", "n")}
    assert val_loss(old, VAL) is None
    assert SELECTION_METHODS.get("val_loss").select([old, _rec(2, 0.8, 0.3)], VAL)["step"] == 2
    # Records from before `ce` (the golden run's without it): no val_loss entry, the rest as
    # before.
    records = [{k: v for k, v in r.items() if k not in ("ce", "n")}
               for r in io.read_jsonl(GOLDEN / "results.jsonl")]
    protocol = json.loads((GOLDEN / "protocol.json").read_text())
    s = summarize(records, protocol)
    assert "val_loss" not in s and set(s) == {"objective_start", "training_domain_validation", "last"}
    golden = {k: v for k, v in json.loads((GOLDEN / "summary.json").read_text()).items()
              if k != "val_loss"}
    assert s["training_domain_validation"]["step"] == golden["training_domain_validation"]["step"]
    # ... and a summary table over an old and a new run shows the methods both have.
    console = Console(file=_io.StringIO(), width=200)
    print_summary(console, {"old": (golden, protocol), "new": ({**golden, "val_loss": golden["last"]}, protocol)})
    text = console.file.getvalue()
    assert "training_domain_validation" in text and "model selection: val_loss" not in text


# ------------------------------------------------------------------ presets


def test_dre_preset_carries_dres_training_settings():
    cfg = make_config(preset="dre", data="d", out="o", test_domains=["A"])
    expected = dict(algorithm="dre", backbone="resnet50", pretrained="imagenet", freeze_bn=True,
                    image_size=224, augment=True, batch_size=16, steps=5000, eval_every=200,
                    holdout_fraction=0.2, selection="val_loss", preset="dre")
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert cfg.hparams == {"lr": 5e-5, "weight_decay": 0.0, "dropout": 0.0}
    align = make_config(preset="align", data="d", out="o", test_domains=["A"])
    assert align.algorithm == "align" and align.selection == "val_loss" and align.steps == 5000


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_is_a_valid_config(name):
    preset = PRESETS.get(name)
    assert set(preset.fields) <= FIELDS and all(src for _, src in preset.fields.values())
    cfg = make_config(preset=name, data="d", out="o", test_domains=["A"])
    algo = ALGORITHMS.get(cfg.algorithm)
    resolve(algo.hparam_spec(), cfg.hparams, name)  # known hyperparameters of its algorithm


def test_precedence_defaults_preset_file_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("batch_size: 4\nsteps: 100\nhparams: {lr: 0.001, mix_lambda: per_step}\n")
    cfg = make_config(f, preset="dre", data="d", out="o", test_domains=["A"], steps=7)
    assert cfg.steps == 7  # flag > file > preset
    assert cfg.batch_size == 4  # file > preset
    assert cfg.eval_every == 200 and cfg.image_size == 224  # preset > defaults
    assert cfg.eval_batch_size == TrainConfig.eval_batch_size  # defaults
    assert cfg.hparams == {"lr": 0.001, "weight_decay": 0.0, "dropout": 0.0, "mix_lambda": "per_step"}
    # A config file may name the preset itself (as a run's config.json does)...
    g = tmp_path / "g.yaml"
    g.write_text("preset: align\nsteps: 9\n")
    cfg = make_config(g, data="d", out="o", test_domains=["A"])
    assert cfg.preset == "align" and cfg.algorithm == "align" and cfg.steps == 9 and cfg.batch_size == 16
    # ... and without a preset nothing changes.
    plain = make_config(data="d", out="o", test_domains=["A"])
    assert plain.preset is None and plain.selection == "training_domain_validation" and plain.steps == 5001
    with pytest.raises(KeyError, match="unknown training preset 'x'.*dre"):
        make_config(preset="x", data="d", out="o", test_domains=["A"])
    with pytest.raises(ValueError, match="selection 'best'"):
        make_config(data="d", out="o", test_domains=["A"], selection="best")


def test_old_config_without_new_keys_still_resumes(tmp_path):
    cfg = dataclasses.asdict(TrainConfig(data="d", out=str(tmp_path)))
    (tmp_path / "x").mkdir()
    old = {k: v for k, v in cfg.items() if k not in ("selection", "preset")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert RunDir(tmp_path).check_compatible(cfg, defaults=TrainConfig().to_dict())
    with pytest.raises(FileExistsError, match="selection"):
        RunDir(tmp_path).check_compatible({**cfg, "selection": "val_loss"}, defaults=TrainConfig().to_dict())


# ------------------------------------------------------------------ the loop


def test_loop_records_mean_ce_and_counts(tiny_synth, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tiny_synth, tmp_path / "r", steps=1, eval_every=1))
    # Zero logits: every sample's cross-entropy is log(K), whatever its label.
    monkeypatch.setattr(trainer.algorithm, "predict", lambda x: torch.zeros(len(x), 4))
    trainer.run()
    rec = io.read_jsonl(tmp_path / "r" / "results.jsonl")[-1]
    splits = json.loads((tmp_path / "r" / "splits.json").read_text())
    assert rec["n"] == {f"{d}_{s}": len(splits[d][s]) for d in splits for s in ("in", "out")}
    assert all(v == pytest.approx(math.log(4)) for v in rec["ce"].values())


@pytest.mark.parametrize("selection,best_step", [("val_loss", 1), ("training_domain_validation", 2),
                                               ("last", 3)])
def test_best_checkpoint_follows_the_configured_selection(tiny_synth, tmp_path, monkeypatch,
                                                          selection, best_step):
    trainer = Trainer(tiny_config(tiny_synth, tmp_path / "r", steps=3, eval_every=1,
                                  selection=selection))
    val = trainer.protocol.val_keys()
    # Scripted evaluations: step 1 has the lowest validation loss, step 2 the best accuracy.
    script = iter([(0.3, 0.2), (0.9, 1.5), (0.1, 2.5)])

    def evaluate(loader):
        acc, ce = next(script)
        return {"acc": {k: acc for k in trainer.eval_keys}, "ce": {k: ce for k in trainer.eval_keys},
                "n": {k: 10 for k in trainer.eval_keys}, "eval": {}}

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    summary = trainer.run()
    assert summary["val_loss"]["step"] == 1 and summary["training_domain_validation"]["step"] == 2
    assert summary["val_loss"]["val_loss"] == pytest.approx(0.2) and len(val) == 3
    assert io.load_checkpoint(tmp_path / "r" / "checkpoints" / "best.pt")["step"] == best_step


def test_cli_preset_dre_trains_with_val_loss_selection(tiny_synth, tmp_path):
    cfg = tmp_path / "c.yaml"  # the preset's data-size settings scaled down for the CPU
    cfg.write_text("pretrained: null\nimage_size: 32\nbatch_size: 4\neval_every: 1\nnum_workers: 0\n"
                   "hparams: {lr: 0.01}\n")
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["train", "--preset", "dre", "--data", str(tiny_synth / "images"),
                                   "--test-domains", "texture", "--backbone", "smallcnn",
                                   "--steps", "4", "--device", "cpu", "--out", str(out),
                                   "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["preset"] == "dre" and resolved["algorithm"] == "dre"
    assert resolved["selection"] == "val_loss" and resolved["freeze_bn"] is True
    assert resolved["steps"] == 4 and resolved["backbone"] == "smallcnn" and resolved["image_size"] == 32
    assert resolved["hparams"]["lr"] == 0.01 and resolved["hparams"]["sparsity_form"] == "dre"
    summary = json.loads((out / "summary.json").read_text())
    records = io.read_jsonl(out / "results.jsonl")
    protocol = json.loads((out / "protocol.json").read_text())
    losses = [val_loss(r, protocol["val_keys"]) for r in records]
    assert summary["val_loss"]["step"] == records[losses.index(min(losses))]["step"]
    assert io.load_checkpoint(out / "checkpoints" / "best.pt")["step"] == summary["val_loss"]["step"]
    assert "model selection: val_loss" in " ".join(res.output.split())


def test_api_train_takes_a_preset_and_refuses_mixed_arguments(tmp_path):
    from align.api import train  # (`align.train` is the subpackage once align.training.loop is loaded)

    with pytest.raises(KeyError, match="unknown training preset 'nope'"):
        train(preset="nope", data="d", out=str(tmp_path / "r"), test_domains=["A"])
    with pytest.raises(ValueError, match="not both"):
        train(TrainConfig(data="d", out="o", test_domains=["A"]), preset="dre")
    assert not (tmp_path / "r").exists()


def test_report_reads_the_runs_own_selection(tmp_path):
    """A run selected by val_loss is reported at its val_loss checkpoint (the one evaluated)."""
    import shutil

    from align.report.collect import load_run_record
    from align.report.paper_tables import _accuracy

    run = tmp_path / "run"
    shutil.copytree(GOLDEN, run)
    summary = {k: v for k, v in json.loads((run / "summary.json").read_text()).items()
               if k != "val_loss"}  # as a run from before `val_loss` wrote it
    # at the evaluated step: a report refuses an evaluation of another checkpoint than best.pt's
    picked = {**summary["last"], "step": summary["training_domain_validation"]["step"],
              "acc": {k: 0.123 for k in summary["last"]["acc"]}}
    (run / "summary.json").write_text(json.dumps({**summary, "val_loss": picked}))
    assert {v for _, v in _accuracy("ood")(load_run_record(run))} != {0.123}  # default: tdv
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "selection": "val_loss"}))
    assert {v for _, v in _accuracy("ood")(load_run_record(run))} == {0.123}
    (run / "summary.json").write_text(json.dumps(summary))  # selected by val_loss, but no entry
    from align.report.collect import RunDirError

    with pytest.raises(RunDirError, match="no 'val_loss' entry"):
        load_run_record(run)
