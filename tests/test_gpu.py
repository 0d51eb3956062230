"""The CUDA path: same maps as on the CPU, training on the GPU, checkpoints that load anywhere,
mixed precision (bf16 and fp16) for every algorithm, channels-last, pinned memory, peak memory.

Skipped where no CUDA device is present (the development machines and CI); run with
``python -m pytest -m gpu`` on a machine that has one.
"""

from __future__ import annotations

import json

import pytest
import torch

from align.explain.gradcam import gradcam
from align.models import Classifier, build_backbone

from align.algorithms import ALGORITHMS

from conftest import cam_difference, tiny_config, train_under_precision

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def exact_cuda():
    """Full-precision float32 on the GPU (no TF32), so CPU and GPU results can be compared."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_gradcam_on_cuda_matches_cpu(exact_cuda):
    torch.manual_seed(0)
    model = Classifier(build_backbone("smallcnn"), 5).eval()
    x = torch.randn(6, 3, 32, 32)
    y = torch.arange(6) % 5
    cpu = gradcam(model, model.cam_layer, x, y, upsample=True)
    model.to(exact_cuda)
    gpu = gradcam(model, model.cam_layer, x.to(exact_cuda), y.to(exact_cuda), upsample=True)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


def test_differentiable_gradcam_trains_on_cuda(exact_cuda):
    torch.manual_seed(0)
    model = Classifier(build_backbone("smallcnn"), 3).to(exact_cuda)
    x = torch.randn(4, 3, 32, 32, device=exact_cuda)
    cam = gradcam(model, model.cam_layer, x, torch.tensor([0, 1, 2, 0], device=exact_cuda),
                  create_graph=True)
    cam.mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.device.type == "cuda" and torch.isfinite(g).all() for g in grads)


def test_align_trains_on_cuda_and_loads_on_cpu(tiny_synth, tmp_path):
    from align.api import load_run
    from align.training.loop import Trainer

    run_path = tmp_path / "run"
    cfg = tiny_config(
        tiny_synth, run_path, algorithm="align", device="cuda", steps=8, eval_every=4,
        hparams={"lr": 1e-3, "warmup_steps": 2, "masker_warmup_steps": 2},
    )
    summary = Trainer(cfg).run()
    assert summary["steps"] == 8
    run = load_run(run_path, checkpoint="last", device="cpu")  # saved on the GPU, read anywhere
    logits = run.predict(torch.randn(2, 3, 32, 32))
    assert logits.device.type == "cpu" and logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert "masker_iou" in run.results[-1]["eval"]  # scored on the GPU against the exact masks


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_trains_under_mixed_precision_on_cuda(name, precision):
    """Finite losses and (unscaled) gradients, every parameter trained, as on the CPU in fp32."""
    train_under_precision(name, precision, torch.device("cuda"))


@pytest.mark.parametrize("precision,tolerance", [("bf16", 0.05), ("fp16", 0.01)])
def test_mixed_precision_grad_cam_is_float32_and_close_to_float32(exact_cuda, precision, tolerance):
    """Stated tolerances on a [0, 1] scale: bf16 (8 significant bits) 0.05 as on the CPU,
    fp16 (11 bits) 0.01; means a tenth of them."""
    diff = cam_difference(precision, exact_cuda)
    assert diff.max() <= tolerance and diff.mean() <= tolerance / 10, (diff.max(), diff.mean())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_soft_bce_runs_under_cuda_autocast(dtype):
    """CUDA's autocast refuses F.binary_cross_entropy; soft_bce computes it in float32."""
    from align.losses import soft_bce

    pred = torch.rand(4, 1, 7, 7, device="cuda")
    target = (torch.rand(4, 1, 7, 7, device="cuda") > 0.5).float()
    with torch.autocast("cuda", dtype=dtype):
        loss = soft_bce(pred.to(dtype), target, eps=1e-3)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_fp16_channels_last_run_on_cuda(tiny_synth, tmp_path):
    """A whole run in fp16 and channels-last: the loss scale is checkpointed, the loaders pin
    memory, records report CUDA's peak memory, and `align evaluate` defaults to the GPU."""
    from align import io
    from align.evaluate import EvalConfig, evaluate_run
    from align.training.loop import Trainer

    run_path = tmp_path / "run"
    trainer = Trainer(tiny_config(
        tiny_synth, run_path, algorithm="align", device="cuda", steps=8, eval_every=4,
        precision="fp16", channels_last=True,
        hparams={"lr": 1e-3, "warmup_steps": 2, "masker_warmup_steps": 2}))
    train, evaluation = trainer._loaders(0)
    assert train.pin_memory and evaluation.pin_memory
    trainer.run()
    state = io.load_checkpoint(run_path / "checkpoints" / "last.pt")
    assert state["loss_scale"]["scale"] > 0
    records = [json.loads(line) for line in (run_path / "results.jsonl").read_text().splitlines()]
    assert all(r["peak_memory"] == "cuda_max_allocated" and r["peak_memory_mib"] > 0
               and r["images_per_s"] > 0 for r in records)
    record = evaluate_run(run_path, EvalConfig(max_batches=1, metrics=["insertion"],
                                               n_examples=0))
    assert record["config"]["device"] == "cuda"
