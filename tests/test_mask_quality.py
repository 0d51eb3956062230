"""The mask-quality experiment end to end on the tiny benchmark (a few steps per run)."""

import json

from align.experiments.mask_quality import run_mask_quality


def test_mask_quality_experiment_writes_table_and_plot(tmp_path, tiny_synth, monkeypatch):
    from align import quickstart

    # tiny images: shrink the shared settings for this test only
    monkeypatch.setitem(quickstart.QUICKSTART_SETTINGS, "image_size", 32)
    monkeypatch.setitem(quickstart.QUICKSTART_SETTINGS, "batch_size", 4)
    monkeypatch.setitem(quickstart.QUICKSTART_SETTINGS, "eval_every", 2)
    monkeypatch.setitem(quickstart.QUICKSTART_SETTINGS, "num_workers", 0)
    res = run_mask_quality(tmp_path, method="gradia", seeds=[0], test_domains=["texture"],
                           levels=[1.0, 0.7], steps=2, data=tiny_synth)
    assert list(res) == ["ground truth", "dilate@0.7", "generic segmentation", "ERM", "ALIGN"]
    assert res["ground truth"]["mask_iou"] == 1.0
    assert abs(res["dilate@0.7"]["mask_iou"] - 0.7) < 0.05
    assert res["ERM"]["mask_iou"] is None
    for name in ("mask_quality.md", "mask_quality.csv", "mask_quality.png", "mask_quality.pdf"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "mask_quality.json").read_text())
    assert saved["result"]["ground truth"]["ood"]["n"] == 1
    # the GRADIA runs were supervised with the degraded folder
    cfg = json.loads((tmp_path / "runs" / "gradia-dilate_0.7" / "test-texture" / "seed0" / "config.json").read_text())
    assert cfg["algorithm"] == "gradia" and cfg["masks"].endswith("dilate_0.7")
    assert (tmp_path / "runs" / "erm" / "test-texture" / "seed0" / "done").exists()
