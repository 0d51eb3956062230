"""Logs a batch job can read: one plain line per evaluation without a terminal, the TensorBoard
event file (config `tensorboard: true`), and env.json's git commit."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from align.config import TrainConfig
from align.errors import ConfigError
from align.io import read_jsonl
from align.training.logs import eval_line, record_scalars
from align.training.loop import Trainer
from align.training.rundir import git_state
from align.ui import progress_bar

from conftest import tiny_config

RECORD = {"step": 300, "losses": {"loss": 0.69314, "ce": 0.5, "masker/dist": 0.25},
          "acc": {"A_in": 0.5, "B_out": 0.125}, "ce": {"B_out": 1.0}, "n": {"B_out": 8},
          "eval": {"masker_iou": {"B_out": 0.5}}, "seconds": 12.3456,
          "images_per_s": 123456.7, "peak_memory_mib": 2048.0, "peak_memory": "cpu_peak_rss"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def test_eval_line_is_built_from_the_record_so_new_fields_appear():
    assert eval_line(RECORD, "erm A seed 0", 5001) == (
        "erm A seed 0 step 300/5001 | losses: loss=0.6931 ce=0.5 masker/dist=0.25 | "
        "acc: A_in=0.5 B_out=0.125 | seconds=12.35 images_per_s=123457 peak_memory_mib=2048")
    assert record_scalars(RECORD)[:2] == [("losses/loss", 0.69314), ("losses/ce", 0.5)]
    assert {t for t, _ in record_scalars(RECORD)}.isdisjoint({"ce/B_out", "n/B_out", "step"})


def test_progress_bar_prints_plain_lines_only_without_a_terminal():
    out = io.StringIO()
    with progress_bar(5001, "erm", Console(file=out)) as prog:  # a file: no terminal
        prog.on_step(0, {})
        prog.on_eval(RECORD)
    assert out.getvalue() == eval_line(RECORD, "erm", 5001) + "\n"
    tty = io.StringIO()
    with progress_bar(5001, "erm", Console(file=tty, force_terminal=True)) as prog:
        prog.on_eval(RECORD)
    assert "step 300/5001 |" not in tty.getvalue()


def test_align_train_in_a_batch_job_logs_one_line_per_evaluation(tiny_synth, tmp_path):
    from align.cli import app

    (tmp_path / "c.json").write_text(json.dumps(dict(
        backbone="smallcnn", pretrained=None, image_size=32, batch_size=8, eval_every=4,
        eval_batch_size=64, num_workers=0, device="cpu", hparams={"lr": 1e-3})))
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_synth / "images"), "--out",
                                   str(tmp_path / "run"), "--config", str(tmp_path / "c.json"),
                                   "--steps", "8", "--test-domains", "texture"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("erm step ")]
    records = read_jsonl(tmp_path / "run" / "results.jsonl")
    assert lines == [eval_line(r, "erm", 8) for r in records] and len(lines) == 2


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_tensorboard_logs_every_loss_term_and_accuracy_and_resumes_cleanly(tiny_synth, tmp_path):
    pytest.importorskip("tensorboard")  # the `test` extra installs it
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, algorithm="align", steps=8, tensorboard=True,
                        hparams={"lr": 1e-3, "warmup_steps": 3, "masker_warmup_steps": 2})).run()
    records = read_jsonl(run / "results.jsonl")
    got = _scalars(run / "tensorboard")
    tags = {t for r in records for t, _ in record_scalars(r)}
    assert set(got) == tags
    assert {"losses/loss", "losses/ce", "losses/masker/loss", "acc/texture_in",
            "acc/photo_out"} <= tags
    for tag in ("losses/ce", "acc/texture_in"):
        group, key = tag.split("/", 1)
        assert got[tag] == [(r["step"], pytest.approx(r[group][key])) for r in records]
    # A process killed after logging step 12 but before its checkpoint: resumed from step 8,
    # the run purges the orphaned event and logs each step once, as results.jsonl holds it.
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run / "tensorboard")) as orphan:
        orphan.add_scalar("acc/texture_in", -1.0, 12)
    Trainer(tiny_config(tiny_synth, run, algorithm="align", steps=12, tensorboard=True,
                        hparams={"lr": 1e-3, "warmup_steps": 3, "masker_warmup_steps": 2})).run()
    final = read_jsonl(run / "results.jsonl")
    assert _scalars(run / "tensorboard")["acc/texture_in"] == [
        (r["step"], pytest.approx(r["acc"]["texture_in"])) for r in final]
    assert [r["step"] for r in final] == [4, 8, 12]


def test_tensorboard_key_is_validated(tmp_path, monkeypatch):
    base = dict(data="d", out=str(tmp_path / "o"), test_domains=["A"])
    with pytest.raises(ConfigError, match="'tensorboard' must be true/false"):
        TrainConfig(**base, tensorboard="yes").validate()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'align\[tensorboard\]'"):
        TrainConfig(**base, tensorboard=True).validate()
    TrainConfig(**base, tensorboard=False).validate()  # off: nothing to import


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_state_of_a_checkout_and_of_anything_else(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "f.txt").write_text("a")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = git("rev-parse", "HEAD")
    assert git_state(repo) == (head, False)
    (repo / "f.txt").write_text("b")
    assert git_state(repo) == (head, True)
    # a folder inside a checkout (an installed align in a venv inside a repo) is not one
    assert git_state(repo / "src") == (None, None)
    assert git_state(tmp_path) == (None, None)


def test_env_json_records_versions_device_and_commit(tiny_synth, tmp_path):
    Trainer(tiny_config(tiny_synth, tmp_path / "run", steps=4)).run()
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["python"] and env["torchvision"]
    assert env["device"] == "cpu" and env["device_name"] is None
    assert (env["git_commit"], env["git_dirty"]) == git_state()
