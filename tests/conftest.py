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
