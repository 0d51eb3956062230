"""The benchmark's four regimes: their data and initialisation, and the combined table."""

from __future__ import annotations

import json

import pytest

from align.regimes import REGIMES


def test_the_four_regimes_cross_cue_and_initialisation():
    got = {n: (REGIMES.get(n).synth_config.cue_kind, REGIMES.get(n).pretrained)
           for n in REGIMES.names()}
    assert got == {"square-scratch": ("square", False), "square-pretrained": ("square", True),
                   "background-scratch": ("background", False),
                   "background-pretrained": ("background", True)}
    assert REGIMES.get("square-scratch").train_settings(None, "smallcnn", 64) == {"pretrained": None}


@pytest.fixture
def tiny_regimes(monkeypatch):
    """Regimes on 32 px data of 48 images per domain, a 20-step upstream pre-training and
    2-image batches: the whole pipeline in seconds."""
    import align.pretrain as pretrain
    import align.regimes as regimes
    from align.experiments import settings
    from align.pretrain import PretrainConfig

    from conftest import TINY

    monkeypatch.setattr(regimes, "DEFAULT_CONFIG", TINY)
    original = pretrain.ensure_pretrained
    tiny = PretrainConfig(steps=20, batch_size=8)
    monkeypatch.setattr(pretrain, "ensure_pretrained",
                        lambda *a, **kw: original(*a, **{**kw, "config": tiny}))
    for key, value in (("image_size", 32), ("batch_size", 4), ("eval_every", 2),
                       ("num_workers", 0)):
        monkeypatch.setitem(settings.QUICKSTART_SETTINGS, key, value)


def test_run_regimes_trains_each_regime_and_writes_one_table(tiny_regimes, tmp_path):
    from align.experiments.four_regimes import run_regimes

    out = tmp_path / "bench"
    regimes = ["square-scratch", "background-pretrained"]
    table = run_regimes(out, regimes, ["erm", "align"], [0], steps=4, test_domains=["texture"])
    assert list(table) == regimes and all(list(rows) == ["erm", "align"] for rows in table.values())
    # each regime is a whole benchmark folder of its own, with its own cue kind
    for regime, kind in (("square-scratch", "square"), ("background-pretrained", "background")):
        meta = json.loads((out / regime / "data" / "synth.json").read_text())
        assert meta["config"]["cue_kind"] == kind
        assert (out / regime / "results.md").is_file()
    cfg = json.loads((out / "background-pretrained" / "runs" / "align" / "test-texture" / "seed0"
                      / "config.json").read_text())
    assert cfg["pretrained"].startswith(str(out / "pretrained")) and cfg["freeze_bn"] is True
    assert cfg["eval_masks"] == {"cue": str(out / "background-pretrained" / "data" / "cues")}
    scratch = json.loads((out / "square-scratch" / "runs" / "erm" / "test-texture" / "seed0"
                          / "config.json").read_text())
    assert scratch["pretrained"] is None
    align_row = table["background-pretrained"]["align"]
    assert align_row["paired_vs_erm"]["n"] == 1
    assert set(align_row["masker"]) == {"object", "cue", "area"}
    assert table["background-pretrained"]["erm"]["masker"] == {}
    from align.experiments.four_regimes import masker_curves

    curves = masker_curves(out / "background-pretrained")
    assert set(curves) == {"keeps object", "keeps cue", "area"}
    steps, runs = curves["keeps cue"]
    assert steps == [2, 4] and len(runs) == 1
    assert runs[0][-1] == pytest.approx(align_row["masker"]["cue"])  # selected = last here
    assert (out / "figures" / "regimes-masker.png").stat().st_size > 0
    text = (out / "regimes.md").read_text()
    assert "| background-pretrained | align |" in text and "| square-scratch | erm |" in text
