"""The CUDA path: same maps as on the CPU, training on the GPU, checkpoints that load anywhere.

Skipped where no CUDA device is present (the development machines and CI); run with
``python -m pytest -m gpu`` on a machine that has one.
"""

from __future__ import annotations

import pytest
import torch

from align.explain.gradcam import gradcam
from align.models import Classifier, build_backbone

from conftest import tiny_config

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
