"""Shared fixtures: a tiny synthetic benchmark generated once per session (offline, CPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from align.data.synthetic import DEFAULT_CONFIG, generate

TINY = dataclasses.replace(DEFAULT_CONFIG, size=32, n_per_domain=48)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """4 domains x 4 classes x 12 images of 32 px, with exact masks."""
    root = tmp_path_factory.mktemp("synth") / "data"
    return generate(root, TINY, seed=0)


@pytest.fixture(autouse=True)
def _threads():
    # Two cores: keep intra-op threads fixed so results do not depend on the machine's load.
    torch.set_num_threads(2)
    yield


def tiny_config(tiny_synth, out, **kw):
    from align.config import TrainConfig

    base = dict(
        data=str(tiny_synth / "images"), masks=str(tiny_synth / "masks"), out=str(out),
        algorithm="erm", protocol="lodo", test_domains=["texture"], steps=12, seed=0,
        backbone="smallcnn", pretrained=None, image_size=32, batch_size=8, eval_every=4,
        eval_batch_size=64, num_workers=0, device="cpu", hparams={"lr": 1e-3},
    )
    base.update(kw)
    return TrainConfig(**base)


def train_under_precision(name: str, precision: str, device, steps: int = 4) -> dict:
    """Train algorithm `name` (smallcnn, 32 px, 12 images) for `steps` iterations under
    `precision` on `device`, each phase as the training loop runs it; fail on a non-finite loss
    term or an unscaled gradient, or a parameter that never received a gradient. Returns the
    last phase's loss terms. fp16 starts from a loss scale of 2^8 (not 2^16): on so few images
    the first steps would otherwise only overflow and be skipped, which the scaler handles but
    which would leave nothing to check."""
    from align.algorithms import Batch, build_algorithm
    from align.training.precision import Precision

    torch.manual_seed(0)
    algo = build_algorithm(name, backbone="smallcnn", num_classes=3, num_domains=2, hparams={
        "warmup_steps": 1, "masker_warmup_steps": 1} if name == "align" else {}).to(device)
    amp = Precision(precision, device)
    if amp.scaler is not None:
        amp.load_state_dict({**amp.state_dict(), "scale": 2.0 ** 8})
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(12, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1.0
    batch = Batch(x=torch.randn(12, 3, 32, 32, generator=g).to(device),
                  y=(torch.arange(12) % 3).to(device), mask=mask.to(device), n_domains=2)
    got_grad = {n: False for n, p in algo.named_parameters() if p.requires_grad}
    algo.train()
    for step in range(steps):  # ALIGN: warm-up, masker warm-up, then both phases
        for phase in algo.phases(step):
            opt = algo.optimizers()[phase]
            with amp.autocast():
                terms = algo.losses(phase, batch, step)
            for k, t in terms.items():
                assert torch.isfinite(t).all(), (name, precision, step, phase, k)
            for o in algo.optimizers().values():
                o.zero_grad(set_to_none=True)
            amp.backward(terms["loss"])
            if amp.scaler is not None:
                amp.scaler.unscale_(opt)
            for n, p in algo.named_parameters():
                if p.grad is not None:
                    assert torch.isfinite(p.grad).all(), (name, precision, step, phase, n)
                    got_grad[n] |= bool(p.grad.abs().sum() > 0)
            amp.step(opt)
        amp.update()
    missing = [n for n, ok in got_grad.items() if not ok]
    assert not missing, f"{name} ({precision}): parameters without gradient: {missing[:5]}"
    return terms


def cam_difference(precision: str, device) -> torch.Tensor:
    """|Grad-CAM under `precision`'s autocast - the float32 one| [16, 1, 4, 4]: DRE's map (no
    ReLU, constant channel weights, min-max normalised) of a random small CNN on 32 px images;
    asserts the low-precision map is float32."""
    from align.explain.gradcam import gradcam_from_features
    from align.models import Classifier, build_backbone
    from align.training.precision import Precision

    torch.manual_seed(0)
    model = Classifier(build_backbone("smallcnn"), 4).to(device)
    x, y = torch.randn(16, 3, 32, 32).to(device), (torch.arange(16) % 4).to(device)
    cams = []
    for name in ("fp32", precision):
        with Precision(name, device).autocast():
            logits, feats = model.forward_with_features(x)
            cams.append(gradcam_from_features(feats, logits, y, create_graph=True,
                                              constant_weights=True, relu=False))
    assert cams[1].dtype == torch.float32
    return (cams[1] - cams[0]).abs()


@pytest.fixture(scope="session")
def tiny_bench(tiny_synth, tmp_path_factory):
    """A miniature `align benchmark` folder, made once: `data/` (the tiny benchmark) and a
    finished 4-step ERM and ALIGN run each in `runs/<algo>/test-texture/seed0`. Copy what you
    change (evaluations are written into the run)."""
    import shutil

    from align.training.loop import Trainer

    out = tmp_path_factory.mktemp("bench") / "bench"
    shutil.copytree(tiny_synth, out / "data")
    hparams = {"erm": {"lr": 1e-3},
               "align": {"lr": 1e-3, "warmup_steps": 2, "masker_warmup_steps": 1}}
    for algo, hp in hparams.items():
        run = out / "runs" / algo / "test-texture" / "seed0"
        Trainer(tiny_config(out / "data", run, algorithm=algo, hparams=hp, steps=4)).run()
    return out
