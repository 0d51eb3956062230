"""`align pretrain` (`align.pretrain`): determinism, caching, loading, errors.

Tiny budgets throughout (a few dozen 32 px images, a few steps), so the file takes seconds.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from align import pretrain as pt
from align.cli import app
from align.data.upstream import UpstreamConfig
from align.models.backbones import build_backbone
from align.pretrain import PretrainConfig, ensure_pretrained, is_finished, weights_path

TINY = PretrainConfig(upstream=UpstreamConfig(n_train=24, n_val=12), steps=3, batch_size=8)


def _state(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


# --- the recipe ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    (dict(steps=0), "steps"), (dict(batch_size=2.5), "batch_size"), (dict(lr=0), "lr"),
    (dict(weight_decay=-1e-4), "weight_decay"), (dict(upstream={}), "upstream"),
])
def test_pretrain_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"PretrainConfig\.{field}"):
        PretrainConfig(**kwargs)


# --- ensure_pretrained ---------------------------------------------------------------------

def test_same_settings_same_weights_other_seed_other_weights(tmp_path):
    a = ensure_pretrained(tmp_path / "a", "smallcnn", 32, 0, TINY)
    b = ensure_pretrained(tmp_path / "b", "smallcnn", 32, 0, TINY)
    c = ensure_pretrained(tmp_path / "c", "smallcnn", 32, 1, TINY)
    sa, sb, sc = _state(a), _state(b), _state(c)
    assert a.name == b.name != c.name and sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.0.weight"], sc["blocks.0.0.weight"])


def test_training_leaves_the_caller_threads_and_rng_alone(tmp_path):
    torch.manual_seed(123)
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    ensure_pretrained(tmp_path, "smallcnn", 32, 0, TINY)
    assert torch.get_num_threads() == threads and torch.equal(torch.random.get_rng_state(), rng)


def test_second_call_returns_the_file_without_training(tmp_path, monkeypatch):
    (tmp_path / "mine.txt").write_text("keep")
    path = ensure_pretrained(tmp_path, "smallcnn", 32, 0, TINY)
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["seed"] == 0 and record["config"]["steps"] == 3 and record["weights"] == path.name
    assert 0 <= record["upstream_val_accuracy"] <= 1 and record["chance"] == 1 / 12
    mtime = path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("retrained")

    monkeypatch.setattr(pt, "train_upstream", no_training)
    assert ensure_pretrained(tmp_path, "smallcnn", 32, 0, TINY) == path
    assert path.stat().st_mtime_ns == mtime
    # every setting is in the name: another one trains (here: the spy refuses)
    with pytest.raises(AssertionError, match="retrained"):
        ensure_pretrained(tmp_path, "smallcnn", 32, 0, dataclasses.replace(TINY, steps=4))
    # nothing else was touched, and no temporary file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["mine.txt", path.name, path.with_suffix(".json").name])
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_a_weights_file_its_record_does_not_vouch_for_is_retrained(tmp_path):
    path = ensure_pretrained(tmp_path, "smallcnn", 32, 0, TINY)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    assert not is_finished(path)
    assert ensure_pretrained(tmp_path, "smallcnn", 32, 0, TINY) == path
    assert path.read_bytes() == good
    path.with_suffix(".json").unlink()  # a weights file without its record is unfinished
    assert not is_finished(path)


def test_weights_load_into_the_backbone_and_change_it(tmp_path):
    path = ensure_pretrained(tmp_path, "smallcnn", 32, 0, TINY)
    saved = _state(path)
    assert {"fc.weight", "fc.bias"} <= saved.keys() and saved["fc.weight"].shape[0] == 12
    torch.manual_seed(0)
    fresh = build_backbone("smallcnn").state_dict()
    torch.manual_seed(0)
    loaded = build_backbone("smallcnn", pretrained=str(path)).state_dict()
    assert loaded.keys() == {k for k in saved if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], saved[k]) for k in loaded)
    assert not torch.equal(loaded["blocks.0.0.weight"], fresh["blocks.0.0.weight"])


def test_resnet_weights_use_torchvision_names(tmp_path):
    config = dataclasses.replace(TINY, steps=1, batch_size=4)
    path = ensure_pretrained(tmp_path, "resnet18", 32, 0, config)
    saved = _state(path)
    assert "conv1.weight" in saved and "bn1.running_mean" in saved and "stem.0.weight" not in saved
    net = build_backbone("resnet18", pretrained=str(path))
    assert torch.equal(net.stem[0].weight, saved["conv1.weight"])


def test_bad_arguments_are_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="out folder .*file"):
        ensure_pretrained(tmp_path / "file", "smallcnn", 32, 0, TINY)
    with pytest.raises(KeyError, match="backbone"):
        ensure_pretrained(tmp_path / "w", "vgg", 32, 0, TINY)
    with pytest.raises(ValueError, match="image_size"):
        ensure_pretrained(tmp_path / "w", "smallcnn", 8, 0, TINY)
    with pytest.raises(ValueError, match="seed"):
        ensure_pretrained(tmp_path / "w", "smallcnn", 32, -1, TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_weights_path_is_keyed_by_every_setting(tmp_path):
    base = weights_path(tmp_path, "smallcnn", 64, 0, TINY)
    assert base.parent == tmp_path and base.name.startswith("smallcnn-64px-seed0-")
    others = [weights_path(tmp_path, "resnet18", 64, 0, TINY),
              weights_path(tmp_path, "smallcnn", 32, 0, TINY),
              weights_path(tmp_path, "smallcnn", 64, 1, TINY),
              weights_path(tmp_path, "smallcnn", 64, 0, dataclasses.replace(TINY, lr=0.01)),
              weights_path(tmp_path, "smallcnn", 64, 0, dataclasses.replace(
                  TINY, upstream=UpstreamConfig(n_train=24, n_val=12, styles=("photo",))))]
    assert len({p.name for p in [base, *others]}) == 6
    assert weights_path(tmp_path, "smallcnn", 64, 0, TINY) == base


def test_pretrain_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.setattr(pt, "DEFAULT_PRETRAIN", TINY)
    runner = CliRunner()
    argv = ["pretrain", "--out", str(tmp_path / "w"), "--image-size", "32", "--steps", "2"]
    res = runner.invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert "trained" in res.output and "upstream accuracy" in res.output
    again = runner.invoke(app, argv)
    assert again.exit_code == 0 and "cached" in again.output
    (tmp_path / "f").write_text("x")
    bad = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "f")])
    assert bad.exit_code == 2 and "is not a folder" in " ".join(bad.output.split())
