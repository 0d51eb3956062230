"""`align shortcut`: Grad-CAM and masker scored against the object and the cue of the benchmark."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from align.data.synthetic import DEFAULT_CONFIG
from align.experiments.shortcut import AREA_ROW, run_shortcut
from align.training.loop import Trainer

from conftest import tiny_config

ALIGN_FAST = {"lr": 1e-3, "warmup_steps": 2, "masker_warmup_steps": 1}


@pytest.fixture
def bench(tiny_synth, tmp_path):
    """A miniature `align benchmark` folder: data/ and two finished runs under runs/."""
    torch.set_num_threads(1)
    out = tmp_path / "bench"
    shutil.copytree(tiny_synth, out / "data")
    for algo, hp in (("erm", {"lr": 1e-3}), ("align", ALIGN_FAST)):
        run = out / "runs" / algo / "test-texture" / "seed0"
        Trainer(tiny_config(out / "data", run, algorithm=algo, hparams=hp, steps=4)).run()
    return out


def test_shortcut_table_scores_object_and_cue(bench):
    table = run_shortcut(bench, max_batches=1, batch_size=16)
    assert set(table) == {AREA_ROW, "align", "erm"}
    # chance row: every scene has one whole cue square of round(0.14 * 32) = 4 px at 32 px
    cue_px = max(2, round(DEFAULT_CONFIG.cue_frac * 32))
    assert table[AREA_ROW]["Grad-CAM energy (cue)"]["mean"] == pytest.approx(cue_px ** 2 / 32 ** 2)
    assert 0 < table[AREA_ROW]["Grad-CAM energy (object)"]["mean"] < 0.5
    for method in ("align", "erm"):
        cells = table[method]
        obj = cells["Grad-CAM energy (object)"]["mean"]
        cue = cells["Grad-CAM energy (cue)"]["mean"]
        assert 0 <= obj and 0 <= cue and obj + cue <= 1 + 1e-6  # disjoint masks, same images
        assert cells["Grad-CAM peak inside (cue)"]["n"] == 1
    assert "masker IoU (cue)" in table["align"] and "masker IoU (object)" not in table["erm"]
    masker = table["align"]
    assert 0 <= masker["masker coverage (cue)"]["mean"] <= 1
    assert 0 <= masker["masker mean over the image"]["mean"] <= 1
    run = bench / "runs" / "align" / "test-texture" / "seed0"
    assert json.loads((run / "evaluation-cue.json").read_text())["config"]["masks"].endswith("cues")
    md = (bench / "shortcut.md").read_text()
    assert md.startswith("| method | runs |") and "| erm | 1 |" in md and f"| {AREA_ROW} | - |" in md


def test_shortcut_needs_cue_masks_and_runs(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        (tmp_path / "empty" / "data" / "masks").mkdir(parents=True)
        (tmp_path / "empty" / "data" / "cues").mkdir()
        run_shortcut(tmp_path / "empty")
    shutil.rmtree(bench / "data" / "cues")
    with pytest.raises(FileNotFoundError, match="predates cue masks"):
        run_shortcut(bench)
