"""The training loop end to end on the tiny synthetic benchmark: run files, resume, NaN, protocols."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import align
from align import io
from align.algorithms.erm import ERM
from align.training.loop import NonFiniteLoss, Progress, Trainer

from conftest import tiny_config


def _records(run):
    return [json.loads(l) for l in (run / "results.jsonl").read_text().splitlines()]


def _strip_time(records):
    """Records without what the machine measures (time, speed, memory)."""
    measured = ("seconds", "images_per_s", "peak_memory_mib")
    return [{k: v for k, v in r.items() if k not in measured} for r in records]


def test_run_directory_contract(tiny_synth, tmp_path):
    run = tmp_path / "run"
    summary = Trainer(tiny_config(tiny_synth, run)).run()
    for name in ("config.json", "env.json", "dataset.json", "protocol.json", "splits.json",
                 "results.jsonl", "summary.json", "done", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).exists(), name
    recs = _records(run)
    assert [r["step"] for r in recs] == [4, 8, 12]
    assert set(recs[0]["acc"]) == {f"{d}_{s}" for d in ("noisy", "photo", "sketch", "texture") for s in ("in", "out")}
    splits = json.loads((run / "splits.json").read_text())
    assert len(splits["photo"]["out"]) == int(48 * 0.2)  # 20% holdout, recorded as paths
    assert splits["photo"]["in"][0].startswith("photo/")
    assert summary["last"]["step"] == 12 and summary["training_domain_validation"]["test_acc"] is not None
    # no temporary files left next to atomically written ones
    assert not [p for p in run.rglob(".*.tmp")]


ALIGN_FAST = {"lr": 1e-3, "warmup_steps": 3, "masker_warmup_steps": 2, "masker_every": 2}


@pytest.mark.parametrize("algorithm,hparams", [("erm", {"lr": 1e-3}), ("align", ALIGN_FAST)])
def test_resume_after_interruption_equals_uninterrupted_run(tiny_synth, tmp_path, algorithm, hparams):
    """Both networks, both optimisers, the RNG and the alternation continue where they stopped."""
    kw = dict(algorithm=algorithm, hparams=hparams)
    full = tmp_path / "full"
    Trainer(tiny_config(tiny_synth, full, **kw)).run()

    part = tmp_path / "part"

    class Crash(Exception):
        pass

    def crash(step, terms):
        if step == 9:  # after the step-8 checkpoint and its record, before step 12's
            raise Crash

    with pytest.raises(Crash):
        Trainer(tiny_config(tiny_synth, part, **kw), Progress(on_step=crash)).run()
    assert [r["step"] for r in _records(part)] == [4, 8]
    assert not (part / "done").exists()
    Trainer(tiny_config(tiny_synth, part, **kw)).run()  # resumes from step 8

    assert _strip_time(_records(part)) == _strip_time(_records(full))
    if algorithm == "align":  # every loss term of both phases logged; masker IoU per split
        last = _records(full)[-1]
        assert {"masker/dist", "masker/sparsity", "masker/smooth", "ce", "reg", "guide"} <= set(last["losses"])
        assert set(last["eval"]["masker_iou"]) == set(last["acc"])
    a = io.load_checkpoint(full / "checkpoints" / "last.pt")["algorithm"]
    b = io.load_checkpoint(part / "checkpoints" / "last.pt")["algorithm"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_records_newer_than_the_checkpoint_are_dropped_on_resume(tiny_synth, tmp_path):
    """An old-format checkpoint (no records inside): results.jsonl is cut back to its step."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=8)).run()
    state = io.load_checkpoint(run / "checkpoints" / "last.pt")
    state["step"] = 4
    del state["records"], state["best_step"]
    io.save_checkpoint(run / "checkpoints" / "last.pt", state)
    (run / "done").unlink()
    Trainer(tiny_config(tiny_synth, run, steps=8)).run()
    assert [r["step"] for r in _records(run)] == [4, 8]


@pytest.mark.parametrize("damage", ["record_without_checkpoint", "checkpoint_without_record",
                                    "results_deleted"])
def test_no_record_is_lost_or_doubled_between_checkpoint_and_record(tiny_synth, tmp_path, damage):
    """Regression (issue 10): a kill after last.pt but before the record's append lost that
    record for good. last.pt now holds every record and results.jsonl is rewritten from it."""
    full = tmp_path / "full"
    Trainer(tiny_config(tiny_synth, full)).run()
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=8)).run()
    (run / "done").unlink()
    lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
    if damage == "record_without_checkpoint":  # killed after a record, before its checkpoint
        (run / "results.jsonl").write_text("".join(lines) + lines[-1].replace('"step": 8', '"step": 12'))
    elif damage == "checkpoint_without_record":  # killed after last.pt, before the record
        (run / "results.jsonl").write_text("".join(lines[:-1]))
    else:
        (run / "results.jsonl").unlink()
    summary = Trainer(tiny_config(tiny_synth, run)).run()
    assert _strip_time(_records(run)) == _strip_time(_records(full))
    best = io.load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == summary["training_domain_validation"]["step"]


def test_best_pt_left_behind_by_a_kill_is_restored_from_the_checkpoint(tiny_synth, tmp_path):
    """A kill after last.pt of an improving step but before best.pt: resume rewrites best.pt."""
    run = tmp_path / "run"
    summary = Trainer(tiny_config(tiny_synth, run, steps=8)).run()
    state = io.load_checkpoint(run / "checkpoints" / "last.pt")
    state["best_step"], state["best_val"] = 8, 2.0  # as if step 8 had improved
    io.save_checkpoint(run / "checkpoints" / "last.pt", state)
    io.save_checkpoint(run / "checkpoints" / "best.pt", {"step": 4, "algorithm": {}})
    (run / "done").unlink()
    Trainer(tiny_config(tiny_synth, run, steps=8)).run()
    best = io.load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == 8 and best["algorithm"].keys() == state["algorithm"].keys()


def test_fewer_steps_than_a_run_has_trained_are_refused(tiny_synth, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=8)).run()
    before = (run / "summary.json").read_text()
    with pytest.raises(ValueError, match="has trained 8 steps; --steps 4 is fewer"):
        Trainer(tiny_config(tiny_synth, run, steps=4)).run()
    assert (run / "summary.json").read_text() == before and (run / "done").exists()


def test_more_steps_continue_a_finished_run(tiny_synth, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=4)).run()
    summary = Trainer(tiny_config(tiny_synth, run, steps=8)).run()
    assert [r["step"] for r in _records(run)] == [4, 8] and summary["steps"] == 8
    assert (run / "done").exists()


def test_resume_with_another_config_is_refused(tiny_synth, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=4)).run()
    with pytest.raises(FileExistsError, match="seed: 0 -> 1"):
        Trainer(tiny_config(tiny_synth, run, steps=4, seed=1))


def test_nan_loss_stops_with_term_and_step(tiny_synth, tmp_path, monkeypatch):
    real = ERM.losses

    def nan_at_5(self, phase, batch, step):
        terms = real(self, phase, batch, step)
        if step == 5:
            terms["ce"] = terms["ce"] * float("nan")
        return terms

    monkeypatch.setattr(ERM, "losses", nan_at_5)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"step 5: loss term\(s\) ce"):
        Trainer(tiny_config(tiny_synth, run)).run()
    assert io.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4  # nothing from the bad state


@pytest.mark.parametrize("algorithm,hparams", [("erm", {"lr": 1e-3}), ("align", ALIGN_FAST)])
@pytest.mark.parametrize("protocol,kw,test_keys", [
    ("single_source", {"train_domains": ["photo"], "test_domains": []},
     ["noisy_in", "sketch_in", "texture_in"]),
    ("in_distribution", {"test_domains": []}, ["noisy_out", "photo_out", "sketch_out", "texture_out"]),
])
def test_other_protocols(tiny_synth, tmp_path, protocol, kw, test_keys, algorithm, hparams):
    run = tmp_path / protocol
    steps = 8 if algorithm == "align" else 4  # past ALIGN's warm-ups: both phases run
    Trainer(tiny_config(tiny_synth, run, protocol=protocol, steps=steps, eval_every=4,
                        algorithm=algorithm, hparams=hparams, **kw)).run()
    proto = json.loads((run / "protocol.json").read_text())
    assert proto["test_keys"] == test_keys
    last = _records(run)[-1]
    assert set(test_keys) <= set(last["acc"])
    if algorithm == "align":
        assert {"masker/dist", "guide"} <= set(last["losses"])
        assert set(last["eval"]["masker_iou"]) == set(last["acc"])


def test_align_on_a_dataset_without_masks(tiny_synth, tmp_path):
    """The masker needs no annotation: ALIGN trains on images alone, with no IoU to report."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, masks=None, algorithm="align", steps=8,
                        hparams=ALIGN_FAST)).run()
    last = _records(run)[-1]
    assert {"masker/dist", "masker/sparsity", "guide", "reg"} <= set(last["losses"])
    assert "masker_iou" not in last["eval"]


@pytest.mark.parametrize("algorithm,hparams", [("rrr", {}), ("gradia", {}),
                                               ("align", {"guidance": "fixed"})])
def test_an_algorithm_that_needs_masks_is_refused_without_them(tiny_synth, tmp_path, monkeypatch,
                                                               algorithm, hparams):
    """The trainer asks the class once, before building a network or writing anything; the
    algorithms then rely on `batch.mask` (they used to check every batch, each its own way)."""
    import align.training.loop as loop

    monkeypatch.setattr(loop, "build_algorithm", lambda *a, **k: pytest.fail("network built"))
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=f"algorithm '{algorithm}' needs masks: pass --masks"):
        Trainer(tiny_config(tiny_synth, run, masks=None, algorithm=algorithm, hparams=hparams))
    assert not run.exists()


def test_irm_with_one_image_per_domain_is_refused_before_anything_is_written(tiny_synth, tmp_path):
    """IRM's split-half penalty has an empty odd half with one image per domain: the loss was NaN
    at step 0, after the run's files were written. Refused up front; two images train."""
    from align.algorithms import Batch, build_algorithm

    run = tmp_path / "run"
    with pytest.raises(ValueError, match="'irm' needs at least 2 images per training domain"):
        Trainer(tiny_config(tiny_synth, run, algorithm="irm", batch_size=1))
    assert not run.exists()
    algo = build_algorithm("irm", backbone="smallcnn", num_classes=4, num_domains=3)
    terms = algo.losses("classifier", Batch(torch.randn(6, 3, 32, 32), torch.arange(6) % 4,
                                            n_domains=3), 0)
    assert torch.isfinite(terms["loss"])
    Trainer(tiny_config(tiny_synth, run, batch_size=1, steps=4))  # ERM: one image is enough


def test_in_distribution_validation_split_is_disjoint_from_train_and_test(tiny_synth, tmp_path):
    t = Trainer(tiny_config(tiny_synth, tmp_path / "r", protocol="in_distribution", test_domains=[]))
    for d, s in t.splits.items():
        assert set(s["train"]) | set(s["val"]) == set(s["in"])
        assert not set(s["train"]) & set(s["val"]) and not set(s["in"]) & set(s["out"])


def test_load_run_and_predict(tiny_synth, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=4)).run()
    r = align.load_run(run)
    assert r.classes == ["circle", "cross", "square", "triangle"]
    logits = r.predict(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_erm_learns_on_the_synthetic_benchmark(tmp_path):
    """In-domain accuracy far above chance (25%) after a short run at the quickstart's settings,
    and the distribution shift is real: out-of-domain accuracy clearly below in-domain."""
    from align.data.synthetic import DEFAULT_CONFIG, generate
    from align.quickstart import QUICKSTART_SETTINGS

    data = generate(tmp_path / "data", DEFAULT_CONFIG, seed=0)
    settings = {**QUICKSTART_SETTINGS, "steps": 300, "num_workers": 0}
    cfg = tiny_config(data, tmp_path / "run", **settings, hparams={"lr": 3e-3})
    summary = Trainer(cfg).run()
    assert summary["last"]["val_acc"] > 0.6
    assert summary["last"]["test_acc"] < summary["last"]["val_acc"] - 0.2


def test_align_selection_skips_warm_up_checkpoints_and_best_pt_agrees(tiny_synth, tmp_path):
    """Guidance starts after step 5 (3 + 2 warm-up steps): the step-4 checkpoint is DRE, not ALIGN,
    and neither selection method nor best.pt may return it, whatever its validation accuracy."""
    run = tmp_path / "run"
    summary = Trainer(tiny_config(tiny_synth, run, algorithm="align", hparams=ALIGN_FAST)).run()
    assert summary["objective_start"] == 5
    assert [r["step"] for r in _records(run)] == [4, 8, 12]
    for method in ("training_domain_validation", "last"):
        assert summary[method]["step"] in (8, 12)
    best = io.load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == summary["training_domain_validation"]["step"]


def test_selection_considers_only_checkpoints_after_the_warm_up():
    from align.training.selection import summarize

    proto = {"val_keys": ["a_out"], "test_keys": ["b_in"]}
    recs = [{"step": s, "acc": {"a_out": v, "b_in": 0.5}} for s, v in ((4, 0.9), (8, 0.6), (12, 0.7))]
    assert summarize(recs, proto)["training_domain_validation"]["step"] == 4
    restricted = summarize(recs, proto, objective_start=5)
    assert restricted["objective_start"] == 5
    assert restricted["training_domain_validation"]["step"] == 12


def test_run_ending_before_guidance_is_refused_before_any_write(tiny_synth, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(tiny_synth, run, algorithm="align",
                      hparams={**ALIGN_FAST, "warmup_steps": 10, "masker_warmup_steps": 2})
    with pytest.raises(ValueError, match=r"from step 12 .* has 12 steps"):
        Trainer(cfg)
    assert not run.exists()


def test_eval_masks_score_the_masker_against_other_masks_over_training(tiny_synth, tmp_path):
    """`eval_masks: {cue: DIR}` logs the masker's scores against the cue masks at every evaluation
    beside those against the object masks; they differ since object and cue are disjoint."""
    run = tmp_path / "run"
    cfg = tiny_config(tiny_synth, run, algorithm="align", hparams=ALIGN_FAST,
                      eval_masks={"cue": str(tiny_synth / "cues")})
    Trainer(cfg).run()
    for rec in _records(run):
        obj, cue = rec["eval"]["masker_coverage"], rec["eval"]["masker_coverage@cue"]
        assert set(obj) == set(cue) == set(rec["acc"])
        assert all(obj[k] != cue[k] for k in obj)
        assert rec["eval"]["masker_area@cue"] == rec["eval"]["masker_area"]  # mask-independent


def test_bad_eval_masks_folder_fails_before_any_write(tiny_synth, tmp_path):
    from align.data.folder import DataError

    run = tmp_path / "run"
    missing = tmp_path / "nothing"
    with pytest.raises(DataError, match="nothing"):
        Trainer(tiny_config(tiny_synth, run, eval_masks={"cue": str(missing)}))
    assert not run.exists()


def test_one_process_per_run_directory_and_a_dead_holder_is_taken_over(tiny_synth, tmp_path):
    """Regression (issue 10): the same command started twice wrote every record twice. A second
    process is refused naming the holder's PID; after a kill -9 of the holder, it proceeds."""
    import signal
    import subprocess
    import sys

    from align.training.rundir import RunLocked

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from align.training.rundir import RunLock\n"
         f"with RunLock({str(run)!r}):\n    print('locked', flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"PID {holder.pid}"):
            Trainer(tiny_config(tiny_synth, run, steps=4)).run()
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    Trainer(tiny_config(tiny_synth, run, steps=4)).run()  # the dead holder's lock is taken over
    assert [r["step"] for r in _records(run)] == [4]


_KILLER = """
import json, os, signal, sys
from align import io
from align.config import TrainConfig
from align.training.loop import Trainer

where, n = sys.argv[2], int(sys.argv[3])
calls = {"n": 0}
original = getattr(io, where)


def killer(*args, **kwargs):  # SIGKILL this process just before the n-th call of io.<where>
    calls["n"] += 1
    if calls["n"] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)


setattr(io, where, killer)
Trainer(TrainConfig(**json.loads(open(sys.argv[1]).read()))).run()
"""


@pytest.mark.slow
def test_sigkill_at_many_points_then_resume_equals_an_uninterrupted_run(tiny_synth, tmp_path):
    """A real training process killed with SIGKILL right before its n-th record append, last.pt
    or best.pt write (inside the record/checkpoint window too), resumed each time: the records,
    the summary and best.pt equal those of an uninterrupted run."""
    import dataclasses
    import subprocess
    import sys

    kw = dict(algorithm="align", hparams=ALIGN_FAST, eval_every=2, steps=12)
    full = tmp_path / "full"
    full_summary = Trainer(tiny_config(tiny_synth, full, **kw)).run()
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(dataclasses.asdict(tiny_config(tiny_synth, run, **kw))))
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    # Per evaluation the loop appends the record (io.append_jsonl), writes last.pt and, when the
    # step improved, best.pt (io.save_checkpoint); the n counts calls within each resumed
    # process. In order: before the first record; between a record and its last.pt; after a
    # last.pt (before best.pt or the next record); mid-run; and, with io.write_json's sixth
    # call (after the five run files), after the last step but before summary.json.
    for where, n in (("append_jsonl", 1), ("save_checkpoint", 1), ("save_checkpoint", 2),
                     ("append_jsonl", 2), ("save_checkpoint", 3), ("write_json", 6)):
        done = subprocess.run([sys.executable, str(script), str(cfg), where, str(n)],
                              capture_output=True, text=True)
        assert done.returncode == -9, (where, n, done.returncode, done.stderr[-2000:])
        assert not [p for p in run.rglob(".*.tmp")]  # atomic writes leave no temporaries
    summary = Trainer(tiny_config(tiny_synth, run, **kw)).run()
    assert _strip_time(_records(run)) == _strip_time(_records(full))
    for method in ("training_domain_validation", "last"):
        assert summary[method]["step"] == full_summary[method]["step"]
    best, best_full = (io.load_checkpoint(r / "checkpoints" / "best.pt") for r in (run, full))
    assert best["step"] == best_full["step"] == summary["training_domain_validation"]["step"]
    for k, v in best_full["algorithm"].items():
        assert torch.equal(best["algorithm"][k], v), k


@pytest.mark.parametrize("key,value,message", [
    ("steps", "ten", "'steps' must be an integer"),
    ("steps", 1e1, "'steps' must be an integer, got 10.0"),
    ("image_size", 32.7, "'image_size' must be an integer"),
    ("num_workers", 2.5, "'num_workers' must be an integer"),
    ("augment", "no", "'augment' must be true/false"),
    ("test_domains", "texture", "'test_domains' must be a list of strings"),
    ("hparams", [1, 2], "'hparams' must be a mapping"),
    ("holdout_fraction", float("nan"), "'holdout_fraction' must be a number"),
    ("hparams", {"lr": -1}, "'lr' must be > 0"),
    ("hparams", {"lr": float("nan")}, "'lr' must be finite"),
])
def test_bad_config_values_are_refused_before_anything_is_written(tiny_synth, tmp_path, key,
                                                                  value, message):
    """Regression (issue 10): these failed after config.json was written (and the corrected
    command was then refused as "another configuration"), or ended in a TypeError."""
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_config(tiny_synth, run, **{key: value}))
    assert not run.exists()
    Trainer(tiny_config(tiny_synth, run, steps=4)).run()  # the corrected command is accepted


def test_a_run_directory_inside_the_dataset_is_refused_before_anything_is_written(tiny_synth,
                                                                                 tmp_path):
    """Regression: the first run trained; every later scan of the dataset (the same command
    resuming it included) then refused the run directory as a domain without class folders."""
    import shutil

    data = tmp_path / "images"
    shutil.copytree(tiny_synth / "images", data)
    for out in (data / "runs" / "erm", data):
        with pytest.raises(ValueError, match="'out' .* lies inside 'data'"):
            Trainer(tiny_config(tiny_synth, out, data=str(data)))
    assert sorted(p.name for p in data.iterdir()) == ["noisy", "photo", "sketch", "texture"]


def test_truncated_empty_or_malicious_checkpoints_get_a_message_naming_the_file(tiny_synth,
                                                                                tmp_path):
    """Regression (issue 10): a truncated or empty last.pt ended in "Aborted." or a traceback;
    a pickle that runs code must be refused without running it."""
    import pickle

    from align.io import CheckpointError

    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=4)).run()
    (run / "done").unlink()
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    for bad in (data[: len(data) // 2], b""):
        last.write_bytes(bad)
        with pytest.raises(CheckpointError, match=str(last)):
            Trainer(tiny_config(tiny_synth, run, steps=8)).run()

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    torch.save({"step": 4, "x": Evil()}, last, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=str(last)):
        Trainer(tiny_config(tiny_synth, run, steps=8)).run()
    assert not (tmp_path / "pwned").exists()


def test_corrupt_run_files_are_named_and_stale_temporaries_are_cleaned(tiny_synth, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=4)).run()
    (run / "config.json").write_text('{"data": ')
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        Trainer(tiny_config(tiny_synth, run, steps=8))
    run2 = tmp_path / "run2"
    Trainer(tiny_config(tiny_synth, run2, steps=4)).run()
    (run2 / "done").unlink()
    stale = run2 / "checkpoints" / ".last.pt.k3j_x9a2.tmp"  # as a kill mid-write leaves it
    stale.write_bytes(b"half")
    mine = run2 / "notes.tmp"  # not the atomic writer's pattern: never touched
    mine.write_text("mine")
    Trainer(tiny_config(tiny_synth, run2, steps=8)).run()
    assert not stale.exists() and mine.read_text() == "mine"


def test_loaded_run_preprocesses_explains_and_masks_like_training(tiny_synth, tmp_path):
    """`Run.preprocess` equals the evaluation transform the trainer used, `Run.gradcam` equals
    the library's Grad-CAM of the predicted class, `Run.mask` is ALIGN's masker, and `overlay`
    blends a map over the de-normalised image."""
    from align.api import overlay
    from align.data.dataset import ImageDataset
    from align.data.folder import scan_domainbed
    from align.data.transforms import build_transform
    from align.explain.gradcam import gradcam

    run_dir = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run_dir, algorithm="align", hparams=ALIGN_FAST)).run()
    run = align.load_run(run_dir)
    folder = scan_domainbed(tiny_synth / "images")
    ds = ImageDataset(folder, build_transform(32, train=False), with_masks=False)
    x = run.preprocess([folder.image_path(i) for i in (0, 5)])
    assert torch.equal(x, torch.stack([ds[0]["x"], ds[5]["x"]]))
    cam = run.gradcam(x)
    clf = run.algorithm.classifier
    assert cam.shape == (2, 1, 32, 32)
    torch.testing.assert_close(cam, gradcam(clf, clf.cam_layer, x, None, upsample=True))
    torch.testing.assert_close(run.mask(x), run.algorithm.masker(x))
    with pytest.raises(ValueError, match="has no masker"):
        erm = tmp_path / "erm"
        Trainer(tiny_config(tiny_synth, erm, steps=4)).run()
        align.load_run(erm).mask(x)
    ones = overlay(x, torch.ones(2, 1, 32, 32), alpha=1.0)
    assert ones.dtype == np.uint8 and ones.shape == (2, 32, 32, 3)
    assert (ones[..., 0] == 128).all() and (ones[..., 2] == 0).all()  # "jet" at 1.0: (0.5, 0, 0)
    plain = overlay(x, torch.zeros(2, 1, 32, 32), alpha=0.0)
    image = np.asarray(Image.open(folder.image_path(0)).convert("RGB"))
    assert np.abs(plain[0].astype(int) - image.astype(int)).max() <= 1  # the image itself


def test_a_checkpoint_from_a_newer_format_is_refused_by_name(tiny_synth, tmp_path):
    from align.training.loop import CHECKPOINT_FORMAT

    run = tmp_path / "run"
    Trainer(tiny_config(tiny_synth, run, steps=4)).run()
    (run / "done").unlink()
    state = io.load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["format"] == CHECKPOINT_FORMAT
    state["format"] = CHECKPOINT_FORMAT + 1
    io.save_checkpoint(run / "checkpoints" / "last.pt", state)
    with pytest.raises(ValueError, match="written by a newer align"):
        Trainer(tiny_config(tiny_synth, run, steps=8)).run()


def test_a_run_killed_while_writing_its_setup_files_resumes(tiny_synth, tmp_path, monkeypatch):
    """A kill after config.json but before splits.json (the sweep's pool test hit it) left a
    run that every relaunch refused ("no splits.json"); nothing was trained, so the splits are
    made again and the run equals an uninterrupted one."""
    from align.training.rundir import RunDir

    real = RunDir.write_json

    def killed_after_config(self, name, obj):
        real(self, name, obj)
        if name == "config.json":
            raise KeyboardInterrupt  # stands for the kill between the two writes

    cfg = tiny_config(tiny_synth, tmp_path / "run", steps=4, eval_every=2)
    with monkeypatch.context() as m:
        m.setattr(RunDir, "write_json", killed_after_config)
        with pytest.raises(KeyboardInterrupt):
            Trainer(cfg).run()
    assert not (tmp_path / "run" / "splits.json").exists()
    resumed = Trainer(cfg).run()
    fresh = Trainer(tiny_config(tiny_synth, tmp_path / "fresh", steps=4, eval_every=2)).run()
    assert resumed["training_domain_validation"] == fresh["training_domain_validation"]
    assert (tmp_path / "run" / "splits.json").read_text() == \
        (tmp_path / "fresh" / "splits.json").read_text()
