"""Speed options on the CPU: mixed precision, channels-last, the data path, evaluation's device
and inference mode, and the images/s and peak memory of every evaluation record.

(The same checks on CUDA, for bf16 and fp16: tests/test_gpu.py.)
"""

from __future__ import annotations

import json
import math
import resource

import pytest
import torch

from align.algorithms import ALGORITHMS
from align.config import make_config
from align.errors import ConfigError
from align.training.precision import PRECISIONS, Precision

from conftest import cam_difference, tiny_config, train_under_precision


def test_precision_is_checked_against_the_registry():
    assert PRECISIONS.names() == ["fp32", "bf16", "fp16"]
    assert make_config(data="d", out="o", test_domains=["a"], precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="precision 'fp8' is not one of: fp32, bf16, fp16"):
        make_config(data="d", out="o", test_domains=["a"], precision="fp8")
    with pytest.raises(ConfigError, match="'channels_last' must be true/false"):
        make_config(data="d", out="o", test_domains=["a"], channels_last="yes")


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_trains_under_bf16_autocast_with_finite_losses_and_gradients(name):
    terms = train_under_precision(name, "bf16", torch.device("cpu"))
    assert terms["loss"].dtype == torch.float32  # losses leave autocast in float32


def test_bf16_grad_cam_is_float32_and_within_tolerance_of_float32():
    """Stated tolerance: DRE's map of a random small CNN under bf16 autocast differs from the
    float32 one by at most 0.05 (mean 0.005) on a [0, 1] scale (measured: 0.020 / 0.0024; bf16
    keeps 8 significant bits of the features and the logits' gradient)."""
    diff = cam_difference("bf16", torch.device("cpu"))
    assert diff.max() <= 0.05 and diff.mean() <= 0.005, (diff.max(), diff.mean())


def test_minmax_normalises_half_precision_maps_in_float32():
    from align.maps import minmax

    maps = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.bfloat16)
    out = minmax(maps, eps=1e-8)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([[0.0, 1 / 3, 2 / 3, 1.0]]))  # bf16 would give 0.3340


def test_soft_bce_is_float32_under_autocast():
    """Known answer: a map at 1 against a target of 0 costs -log(eps) = 6.908 once squashed into
    [eps, 1 - eps]. Squashed in bfloat16, 1 - 1e-3 rounds to 0.9961 and the loss is 5.545."""
    from align.losses import soft_bce

    pred = torch.ones(2, 1, 4, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = soft_bce(pred, torch.zeros(2, 1, 4, 4), eps=1e-3)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(-math.log(1e-3), rel=1e-5)


def test_fp16_loss_scale_is_checkpointed_and_the_resumed_run_is_exact(tiny_synth, tmp_path):
    """fp16 on the CPU exercises the GradScaler path: the checkpoint holds the loss scale, and a
    run stopped and resumed equals an uninterrupted one."""
    from align import io
    from align.training.loop import Trainer

    full, part = tmp_path / "full", tmp_path / "part"
    Trainer(tiny_config(tiny_synth, full, precision="fp16", steps=8)).run()
    state = io.load_checkpoint(full / "checkpoints" / "last.pt")
    assert state["loss_scale"]["scale"] > 0 and "_growth_tracker" in state["loss_scale"]
    Trainer(tiny_config(tiny_synth, part, precision="fp16", steps=4)).run()
    resumed = Trainer(tiny_config(tiny_synth, part, precision="fp16", steps=8))
    seen = []
    original = resumed.precision.load_state_dict
    resumed.precision.load_state_dict = lambda s: (seen.append(s), original(s))
    resumed.run()
    assert seen and seen[0]["scale"] > 0  # restored from the checkpoint, not started afresh
    a, b = (io.load_checkpoint(r / "checkpoints" / "last.pt") for r in (full, part))
    assert a["loss_scale"] == b["loss_scale"]
    for k, v in a["algorithm"].items():
        assert torch.equal(v, b["algorithm"][k]), k


def test_fp32_has_no_scaler_and_fp16_has_one():
    assert Precision("fp32", "cpu").scaler is None and Precision("fp32", "cpu").state_dict() == {}
    assert Precision("bf16", "cpu").scaler is None
    assert Precision("fp16", "cpu").scaler is not None


def _records(run):
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def test_channels_last_trains_the_same_run_in_the_other_memory_format(tiny_synth, tmp_path):
    from align.training.loop import Trainer

    kw = dict(algorithm="align", steps=8, hparams={"lr": 1e-3, "warmup_steps": 2,
                                                   "masker_warmup_steps": 2})
    plain = Trainer(tiny_config(tiny_synth, tmp_path / "plain", **kw))
    plain.run()
    cl = Trainer(tiny_config(tiny_synth, tmp_path / "cl", channels_last=True, **kw))
    seen = []
    original = cl.train_step
    cl.train_step = lambda batch, step: (seen.append(batch.x), original(batch, step))[1]
    cl.run()
    assert seen and all(x.is_contiguous(memory_format=torch.channels_last) for x in seen)
    for module in (cl.algorithm.classifier, cl.algorithm.masker):
        convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last)
                             for c in convs)
    # The same functions up to float rounding, which the min-max normalised Grad-CAM terms
    # amplify once guidance starts (1.5% on reg_exp by step 8): the first record, before it.
    a, b = _records(tmp_path / "plain")[0], _records(tmp_path / "cl")[0]
    assert a["losses"].keys() == b["losses"].keys()
    for k, v in a["losses"].items():
        assert b["losses"][k] == pytest.approx(v, rel=1e-5), k


def test_records_hold_images_per_second_and_peak_memory(tiny_synth, tmp_path, monkeypatch):
    """Known answer: with a clock that advances one second per reading, each evaluation sees
    one second of training, i.e. 4 steps x 8 images x 3 training domains = 96 images/s."""
    import align.training.loop as loop

    class Clock:
        now = 0.0

        @classmethod
        def time(cls):
            cls.now += 1.0
            return cls.now

    monkeypatch.setattr(loop, "time", Clock)
    lines = []
    progress = loop.Progress(on_eval=lines.append)
    loop.Trainer(tiny_config(tiny_synth, tmp_path / "run"), progress).run()
    records = _records(tmp_path / "run")
    assert [r["images_per_s"] for r in records] == [96.0, 96.0, 96.0]
    peak_now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for r in records:
        assert r["peak_memory"] == "cpu_peak_rss" and 0 < r["peak_memory_mib"] <= peak_now + 1
    assert lines == records


def test_the_progress_line_shows_speed_and_memory():
    """On a terminal the bar's info; in a batch job's log the plain evaluation line."""
    import io as stdio

    from rich.console import Console

    from align.ui import progress_bar

    record = {"step": 4, "losses": {"loss": 0.5}, "images_per_s": 123.4,
              "peak_memory_mib": 456.0, "peak_memory": "cpu_peak_rss"}
    console = Console(record=True, width=200, force_terminal=True)
    with progress_bar(10, "erm", console) as prog:
        prog.on_eval(record)
    assert "loss 0.500, 123 img/s, peak 456 MiB" in console.export_text()
    log = stdio.StringIO()
    with progress_bar(10, "erm", Console(file=log, force_terminal=False)) as prog:
        prog.on_eval(record)
    assert "images_per_s=123.4 peak_memory_mib=456" in log.getvalue()


def test_evaluation_runs_in_inference_mode(tiny_synth, tmp_path, monkeypatch):
    """Training's evaluation and `align evaluate` call the algorithm's scores in inference
    mode (neither needs a gradient); `align evaluate` defaults to the run's device."""
    from align.algorithms.erm import ERM
    from align.evaluate import EvalConfig, evaluate_run
    from align.training.loop import Trainer

    modes = []

    def eval_terms(self, x, mask):
        modes.append(torch.is_inference_mode_enabled())
        return {}

    monkeypatch.setattr(ERM, "eval_terms", eval_terms)
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=4)).run()
    assert modes and all(modes)
    modes.clear()
    assert EvalConfig().device is None
    record = evaluate_run(run, EvalConfig(max_batches=1, metrics=["insertion"], n_examples=0))
    assert modes and all(modes)
    assert record["config"]["device"] == "cpu"  # the run's, resolved


def test_the_run_device_falls_back_to_the_cpu_without_cuda(monkeypatch):
    from align.training.device import resolve_device, run_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_device("cuda") == run_device("cuda:1") == run_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    # A mistyped device was torch's RuntimeError, a traceback from `align train`/`evaluate`.
    with pytest.raises(ConfigError, match="unknown device 'tpu'; expected auto, cpu, cuda"):
        resolve_device("tpu")


def test_loaders_pin_memory_for_cuda_only_and_prefetch_with_workers(tiny_synth, tmp_path):
    from align.data.loaders import make_train_loader
    from align.training.loop import Trainer

    trainer = Trainer(tiny_config(tiny_synth, tmp_path / "run"))
    train, evaluation = trainer._loaders(0)
    assert not train.pin_memory and not evaluation.pin_memory  # the run is on the CPU
    loader = make_train_loader(list(range(8)), [[0, 1, 2, 3]], 2, 0, num_workers=2,
                               pin_memory=True)
    assert loader.pin_memory and loader.persistent_workers and loader.prefetch_factor == 4


def test_train_takes_precision_and_channels_last_flags(tiny_synth, tmp_path):
    from typer.testing import CliRunner

    from align.cli import app

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"backbone": "smallcnn", "pretrained": None, "image_size": 32,
                               "batch_size": 4, "eval_every": 2, "num_workers": 0}))
    base = ["train", "--data", str(tiny_synth / "images"), "--test-domains", "texture",
            "--steps", "2", "--device", "cpu", "--config", str(cfg)]
    runner = CliRunner()
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--precision", "fp8"])
    assert bad.exit_code == 2 and "fp8" in bad.output and not (tmp_path / "bad").exists()
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "r"), "--precision", "bf16",
                              "--channels-last"])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["precision"] == "bf16" and config["channels_last"] is True
