"""The command line: help for every command, clear errors for bad input, multi-value flags."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from align.cli import app, expand_multi

runner = CliRunner()


def _text(res) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(res.output.split())


@pytest.mark.parametrize("cmd", [c.name or c.callback.__name__ for c in app.registered_commands])
def test_every_command_has_help(cmd):
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_multi_value_flags_expand():
    argv = ["train", "--test-domains", "A", "B", "--steps", "3", "--seeds", "0", "1"]
    assert expand_multi(argv) == ["train", "--test-domains", "A", "--test-domains", "B",
                                  "--steps", "3", "--seeds", "0", "--seeds", "1"]


def test_train_bad_data_folder_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"),
                              "--test-domains", "A", "--algorithm", "erm"])
    assert res.exit_code == 2
    assert "nope" in _text(res)
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_train_unknown_config_key(tmp_path, tiny_synth):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stepz: 3\n")
    res = runner.invoke(app, ["train", "--data", str(tiny_synth / "images"), "--out", str(tmp_path / "r"),
                              "--test-domains", "texture", "--config", str(cfg)])
    assert res.exit_code == 2 and "stepz" in _text(res)


def test_train_unknown_test_domain(tmp_path, tiny_synth):
    res = runner.invoke(app, ["train", "--data", str(tiny_synth / "images"), "--out", str(tmp_path / "r"),
                              "--test-domains", "mars"])
    assert res.exit_code == 2 and "mars" in _text(res) and "photo" in _text(res)
    assert not (tmp_path / "r").exists()


def test_train_end_to_end_from_the_cli(tmp_path, tiny_synth):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"backbone": "smallcnn", "pretrained": None, "image_size": 32,
                               "batch_size": 4, "eval_every": 2, "num_workers": 0}))
    res = runner.invoke(app, ["train", "--data", str(tiny_synth / "images"), "--masks", str(tiny_synth / "masks"),
                              "--algorithm", "erm", "--test-domains", "texture", "--steps", "2",
                              "--seed", "0", "--out", str(tmp_path / "r"), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "done").exists()
    assert "texture" in res.output and "test" in res.output


def test_train_align_from_the_cli_with_hparams_in_the_config(tmp_path, tiny_synth):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backbone: smallcnn\npretrained: null\nimage_size: 32\nbatch_size: 4\n"
                   "eval_every: 3\nnum_workers: 0\n"
                   "hparams: {warmup_steps: 1, masker_warmup_steps: 1, fill: blur}\n")
    out = tmp_path / "r"
    argv = ["train", "--data", str(tiny_synth / "images"), "--masks", str(tiny_synth / "masks"),
            "--algorithm", "align", "--test-domains", "texture", "sketch",
            "--steps", "3", "--seed", "0", "--out", str(out), "--config", str(cfg)]
    res = runner.invoke(app, expand_multi(argv))  # as the `align` entry point does
    assert res.exit_code == 0, res.output
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["hparams"]["fill"] == "blur" and resolved["test_domains"] == ["texture", "sketch"]
    record = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert "masker/dist" in record["losses"] and "masker_iou" in record["eval"]


def test_evaluate_named_against_cue_masks_with_chosen_metrics(tmp_path, tiny_synth):
    from align.training.loop import Trainer
    from conftest import tiny_config

    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=2, eval_every=2)).run()
    argv = ["evaluate", str(run), "--masks", str(tiny_synth / "cues"), "--name", "cue",
            "--metrics", "pointing_game", "energy_pointing_game", "--max-batches", "1",
            "--batch-size", "8"]
    res = runner.invoke(app, expand_multi(argv))
    assert res.exit_code == 0, res.output
    record = json.loads((run / "evaluation-cue.json").read_text())
    assert record["config"]["metrics"] == ["pointing_game", "energy_pointing_game"]
    assert "evaluation-cue" in res.output and not (run / "evaluation.json").exists()
    bad = runner.invoke(app, ["evaluate", str(run), "--metrics", "accuracy"])
    assert bad.exit_code == 2 and "accuracy" in bad.output


def test_synth_bad_value(tmp_path):
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--cue-strength", "2"])
    assert res.exit_code == 2 and "cue_strength" in _text(res)


def test_masks_command_builds_a_cached_folder(tmp_path, tiny_synth):
    args = ["masks", "--data", str(tiny_synth / "images"), "--out", str(tmp_path / "m"),
            "--source", "degraded", "--gt", str(tiny_synth / "masks"), "--param", "kind=dilate",
            "--param", "level=1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "mean IoU with the truth" in _text(res)
    assert len(list((tmp_path / "m").rglob("*.png"))) == 4 * 48
    res = runner.invoke(app, args[:-1] + ["level=2"])  # other settings: refused without --overwrite
    assert res.exit_code == 2 and "level" in _text(res)


def test_synth_background_cue_from_the_cli(tmp_path):
    out = tmp_path / "bg"
    res = runner.invoke(app, ["synth", "--out", str(out), "--n-per-domain", "4", "--size", "32",
                              "--cue-kind", "background"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "synth.json").read_text())
    assert meta["config"]["cue_kind"] == "background" and meta["seed"] == 0
    bad = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--cue-kind", "halo"])
    assert bad.exit_code == 2 and "SynthConfig.cue_kind" in _text(bad)
    assert not (tmp_path / "x").exists()


def test_train_out_that_is_a_file_read_only_or_on_a_full_disk_gets_a_message(tiny_synth, tmp_path,
                                                                            monkeypatch):
    """Regression (issue 10): these ended in tracebacks."""
    import errno
    import os

    from typer.testing import CliRunner

    from align import io
    from align.cli import app

    base = ["train", "--data", str(tiny_synth / "images"), "--algorithm", "erm",
            "--test-domains", "texture", "--backbone", "smallcnn", "--steps", "2"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pretrained: null\nimage_size: 32\nbatch_size: 4\nnum_workers: 0\n")
    runner = CliRunner()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    res = runner.invoke(app, [*base, "--out", str(a_file), "--config", str(cfg)])
    assert res.exit_code == 2 and "is a file" in res.output and a_file.read_text() == "x"
    res = runner.invoke(app, [*base, "--out", str(a_file / "run"), "--config", str(cfg)])
    assert res.exit_code == 2 and f"{a_file} is a file, not a folder" in res.output  # not "denied"
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        res = runner.invoke(app, [*base, "--out", str(ro / "run"), "--config", str(cfg)])
        assert res.exit_code == 2 and "permission denied" in res.output

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "x")

    monkeypatch.setattr(io, "save_checkpoint", full)
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "run"), "--config", str(cfg)])
    assert res.exit_code == 2 and "disk is full" in res.output and "resumes" in res.output


def test_run_dir_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch):
    import os

    from align.training.rundir import RunDir

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a non-root user on 0500
    with pytest.raises(ValueError, match=f"cannot write to {tmp_path}"):
        RunDir(tmp_path / "new" / "run").check_writable()


def test_the_module_docstring_names_every_command():
    import align.cli

    for c in app.registered_commands:
        assert f"`align {c.name or c.callback.__name__}`" in align.cli.__doc__


@pytest.mark.parametrize("argv,patched", [
    (["synth", "--out", "{tmp}/s"], "align.data.synthetic.generate"),
    (["masks", "--data", "{tmp}", "--out", "{tmp}/m"], "align.masks.build_mask_folder"),
    (["quickstart", "--out", "{tmp}/q"], "align.quickstart.run_quickstart"),
])
def test_every_command_shares_one_error_boundary(tmp_path, monkeypatch, argv, patched):
    """A full disk gets the same message from every command (it used to exist on `align train`
    only; issue 10), a user error is one message with exit code 2, and anything else keeps its
    traceback."""
    import errno

    argv = [a.format(tmp=tmp_path) for a in argv]
    module, attr = patched.rsplit(".", 1)

    def raising(err):
        def write(*args, **kwargs):
            raise err
        return write

    monkeypatch.setattr(f"{module}.{attr}", raising(OSError(errno.ENOSPC, "No space left", "f")))
    res = runner.invoke(app, argv)
    assert res.exit_code == 2 and "disk is full" in _text(res) and "Traceback" not in res.output
    from align.io import CheckpointError

    monkeypatch.setattr(f"{module}.{attr}", raising(CheckpointError("x.pt is truncated [0 B]")))
    res = runner.invoke(app, argv)
    assert res.exit_code == 2 and "error: x.pt is truncated [0 B]" in _text(res)  # no markup
    monkeypatch.setattr(f"{module}.{attr}", raising(ZeroDivisionError("a bug")))
    res = runner.invoke(app, argv)
    assert res.exit_code == 1 and isinstance(res.exception, ZeroDivisionError)


def test_choices_come_from_the_registries(tmp_path):
    from align.models.backbones import BACKBONES
    from align.protocols import PROTOCOLS

    res = runner.invoke(app, ["train", "--help"])
    assert all(name in _text(res) for name in [*BACKBONES.names(), *PROTOCOLS.names()])
    bad = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                              "--backbone", "vgg"])
    assert bad.exit_code == 2 and "'vgg' is not one of" in _text(bad)
    assert not (tmp_path / "r").exists()
