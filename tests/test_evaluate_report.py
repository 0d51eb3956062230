"""`evaluate_run` (evaluation.json, resumability) and `make_report` (golden tables, figures, html).

The golden files: `tests/golden/runs/` holds four run directories (ERM and ALIGN, seeds 0 and 1,
tiny synthetic runs) with only the files the report reads (their JSON files and the examples
their evaluation saved) and no checkpoints; `tests/golden/report/` holds the tables made from
them. Regenerate the tables after an intended change with

    UPDATE_GOLDEN=1 python -m pytest -q tests/test_evaluate_report.py -k golden

and review the diff. See tests/golden/README.md for how the runs were made.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
import torch

import align.metrics
from align.evaluate import EVALUATION_FILE, PARTIAL_FILE, EvalConfig, evaluate_run
from align.metrics import METRICS
from align.report import figures
from align.report.build import TABLE_FILES, make_report, write_tables
from align.report.collect import RunDirError, RunRecord, group_methods, load_run_record
from align.report.paper_tables import Cell, Table, to_markdown
from align.rundir import RunFiles
from align.training.loop import Trainer

from conftest import tiny_config

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_RUNS = sorted(p.parent for p in (GOLDEN / "runs").rglob("config.json"))
ALIGN_FAST = {"lr": 1e-3, "warmup_steps": 3, "masker_warmup_steps": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    # Overrides conftest's two threads: these tiny batches run faster on one thread, and much
    # faster when other jobs load the two cores (two threads then stall on each other).
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def runs(tiny_synth, tmp_path_factory):
    """A trained tiny ERM run and ALIGN run, each with a full evaluation.json of "best"."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for algo, hp in (("erm", {"lr": 1e-3}), ("align", ALIGN_FAST)):
        Trainer(tiny_config(tiny_synth, root / algo, algorithm=algo, hparams=hp)).run()
        evaluate_run(root / algo)
        out[algo] = root / algo
    return out


def _json(path: Path):
    return json.loads(path.read_text())


# ------------------------------------------------------------------ evaluate_run
@pytest.mark.parametrize("algo", ["erm", "align"])
def test_evaluation_json_structure_and_known_values(runs, algo):
    run = runs[algo]
    ev = _json(run / EVALUATION_FILE)
    protocol, summary = _json(run / "protocol.json"), _json(run / "summary.json")
    splits_rec = _json(run / "splits.json")
    assert not (run / PARTIAL_FILE).exists() and not list(run.glob(".*.tmp"))
    assert ev["config"]["checkpoint"] == "best"
    assert ev["config"]["step"] == summary["training_domain_validation"]["step"]
    assert list(ev["splits"]) == protocol["test_keys"] + protocol["val_keys"]
    best = summary["training_domain_validation"]
    for key, s in ev["splits"].items():
        domain, split = key.rsplit("_", 1)
        assert s["role"] == ("ood" if key in protocol["test_keys"] else "in_domain")
        assert s["n"] == s["n_total"] == len(splits_rec[domain][split])  # whole split
        # The same checkpoint on the same split gives the accuracy the training loop logged.
        assert s["accuracy"] == pytest.approx(best["acc"][key], abs=1e-12)
        assert set(s["metrics"]) == set(METRICS.names())  # the tiny data has masks
        for name, m in s["metrics"].items():
            assert math.isfinite(m["mean"]), (key, name)
            assert m["n_valid"] + m["n_excluded"] == s["n"]
            assert m["direction"] == METRICS.get(name).direction
        ins, dele = s["curves"]["insertion"], s["curves"]["deletion"]
        assert ins["fractions"][0] == 0.0 and ins["fractions"][-1] == 1.0
        # Shared endpoints: c_del(0) = c_ins(1) = p_y(x), c_del(1) = c_ins(0) = p_y(substrate).
        assert dele["mean"][0] == pytest.approx(ins["mean"][-1], abs=1e-6)
        assert dele["mean"][-1] == pytest.approx(ins["mean"][0], abs=1e-6)
        if algo == "align":  # the masker's IoU, as logged by training for the same checkpoint
            assert s["extras"]["masker_iou"]["mean"] == pytest.approx(
                best["eval"]["masker_iou"][key], abs=1e-9)
        else:
            assert s["extras"] == {}


@pytest.mark.parametrize("algo", ["erm", "align"])
def test_evaluation_saves_the_scored_maps_of_example_images(runs, algo):
    """examples.npz holds, for the first split, 6 of its images round-robin over the classes with
    the saliency maps the metrics scored, the predictions, the masker's masks and the truth."""
    from align.api import load_run
    from align.data.dataset import ImageDataset
    from align.data.transforms import build_transform
    from align.evaluate import rebuild_folder
    from align.metrics import explain

    files = RunFiles(runs[algo])
    ev, ex = files.evaluation(), files.examples()
    assert ev["examples"]["file"] == "examples.npz" and ex.split == ev["examples"]["split"]
    assert ex.split == "texture_in" and len(ex.paths) == ev["examples"]["n"] == 6
    assert len(set(ex.labels[:4])) == 4  # every class once before any repeats
    assert set(ex.paths) <= set(files.splits()["texture"]["in"])
    loaded = load_run(files.path)
    folder = rebuild_folder(files, files.config(), None, None)
    ds = ImageDataset(folder, build_transform(32, train=False), with_masks=True)
    where = {s.path: i for i, s in enumerate(folder.samples)}
    items = [ds[where[p]] for p in ex.paths]
    x = torch.stack([it["x"] for it in items])
    pred = loaded.predict(x).argmax(1)
    assert list(ex.predictions) == [loaded.classes[int(p)] for p in pred]
    assert list(ex.labels) == [loaded.classes[int(it["y"])] for it in items]
    cam = explain("gradcam", loaded.algorithm.classifier, x, target=pred)[:, 0]
    torch.testing.assert_close(torch.from_numpy(ex.saliency.astype("float32")), cam,
                               atol=2e-3, rtol=0)
    gt = torch.stack([it["mask"][0] for it in items]) > 0.5
    assert (torch.from_numpy(ex.gt) == gt).all() and ex.images.shape == (6, 32, 32, 3)
    assert (ex.masker is not None) == (algo == "align")


def test_last_checkpoint_accuracy_matches_summary(runs, tmp_path):
    run = tmp_path / "erm"
    shutil.copytree(runs["erm"], run)
    ev = evaluate_run(run, EvalConfig(checkpoint="last", metrics=["iou"]))
    last = _json(run / "summary.json")["last"]
    assert ev["config"]["step"] == last["step"]
    for key, s in ev["splits"].items():
        assert s["accuracy"] == pytest.approx(last["acc"][key], abs=1e-12)
    assert list(s["metrics"]) == ["iou"]


def _counting_explain(monkeypatch) -> list[int]:
    calls = []
    real = align.metrics.explain

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(align.metrics, "explain", counting)  # evaluate imports it per batch
    return calls


def test_evaluation_resumes_finished_splits(runs, tmp_path, monkeypatch):
    run = tmp_path / "erm"
    shutil.copytree(runs["erm"], run)
    (run / EVALUATION_FILE).unlink()
    cfg = EvalConfig(batch_size=8, max_batches=2)  # 2 batches in every split: 8 in all

    class Interrupt(Exception):
        pass

    def stop_in_second_split(key, done, total):
        if done == 3:  # the first batch of the second split
            raise Interrupt

    with pytest.raises(Interrupt):
        evaluate_run(run, cfg, progress=stop_in_second_split)
    partial = _json(run / PARTIAL_FILE)
    assert list(partial["splits"]) == ["texture_in"] and not (run / EVALUATION_FILE).exists()

    calls = _counting_explain(monkeypatch)
    seen = []
    resumed = evaluate_run(run, cfg, progress=lambda k, d, t: seen.append((k, d, t)))
    assert len(calls) == 6  # the finished split is not recomputed
    assert seen[0] == ("texture_in", 2, 8) and seen[-1][1:] == (8, 8)
    assert not (run / PARTIAL_FILE).exists() and not (run / "examples.partial.npz").exists()
    kept = RunFiles(run).examples()  # the first split's examples, saved before the interruption
    fresh = evaluate_run(run, cfg, overwrite=True)
    again = RunFiles(run).examples()
    assert list(kept.paths) == list(again.paths) and (kept.saliency == again.saliency).all()
    for key in fresh["splits"]:
        for name in METRICS.names():
            assert resumed["splits"][key]["metrics"][name]["mean"] == pytest.approx(
                fresh["splits"][key]["metrics"][name]["mean"], abs=1e-9)
    # A finished evaluation with the same config is returned without recomputing ...
    calls.clear()
    assert evaluate_run(run, cfg)["splits"] == fresh["splits"] and calls == []
    # ... and a partial file from another configuration is not reused.
    stale = {**fresh, "config": {**fresh["config"], "substrate": "zero"},
             "splits": {"texture_in": fresh["splits"]["texture_in"]}}
    (run / PARTIAL_FILE).write_text(json.dumps(stale))
    evaluate_run(run, cfg, overwrite=True)
    assert len(calls) == 8


def test_resumed_evaluation_whose_examples_were_lost_scores_their_split_again(runs, tmp_path,
                                                                              monkeypatch):
    """The examples of the first split live in examples.partial.npz until the end; if that file
    is lost (or not the one the partial record vouches for), the split is scored again."""
    run = tmp_path / "erm"
    shutil.copytree(runs["erm"], run)
    (run / EVALUATION_FILE).unlink()
    cfg = EvalConfig(batch_size=8, max_batches=2)

    class Interrupt(Exception):
        pass

    def stop_in_second_split(key, done, total):
        if done == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        evaluate_run(run, cfg, progress=stop_in_second_split)
    (run / "examples.partial.npz").unlink()
    calls = _counting_explain(monkeypatch)
    record = evaluate_run(run, cfg)
    assert len(calls) == 8  # 6 as in a plain resumption, and the first split's 2 again
    assert RunFiles(run).examples().split == record["examples"]["split"] == "texture_in"


def test_other_versions_and_corrupt_partials_are_recomputed_not_errors(runs, tmp_path,
                                                                        monkeypatch):
    """Regression (issue 10): an evaluation.json of another format version was returned as if
    current, and a corrupt evaluation.partial.json was an error even with --overwrite."""
    run = tmp_path / "erm"
    shutil.copytree(runs["erm"], run)
    cfg = EvalConfig(batch_size=8, max_batches=1)
    first = evaluate_run(run, cfg, overwrite=True)
    calls = _counting_explain(monkeypatch)
    (run / EVALUATION_FILE).write_text(json.dumps({**first, "version": first["version"] + 1}))
    again = evaluate_run(run, cfg)
    assert len(calls) == 4 and again["version"] == first["version"]  # recomputed
    for overwrite in (True, False):
        (run / EVALUATION_FILE).unlink()
        (run / PARTIAL_FILE).write_text('{"splits": {"texture_in": ')  # cut short by a kill
        again = evaluate_run(run, cfg, overwrite=overwrite)
        assert again["splits"].keys() == first["splits"].keys()
        assert not (run / PARTIAL_FILE).exists()


def test_max_batches_takes_the_same_images_whatever_the_batch_size(runs, tmp_path):
    """A capped evaluation scores a fixed prefix of each split's seeded order, so two batches of 8
    and one batch of 16 score the same 16 images (9 for the 9-image validation splits)."""
    run = tmp_path / "erm"
    shutil.copytree(runs["erm"], run)
    kw = dict(metrics=["pointing_game", "energy_pointing_game"])
    small = evaluate_run(run, EvalConfig(batch_size=8, max_batches=2, **kw))
    big = evaluate_run(run, EvalConfig(batch_size=16, max_batches=1, **kw), overwrite=True)
    for key, s in big["splits"].items():
        assert s["n"] == small["splits"][key]["n"] == min(16, s["n_total"])
        assert s["accuracy"] == small["splits"][key]["accuracy"]
        for name, m in s["metrics"].items():
            assert m["mean"] == pytest.approx(small["splits"][key]["metrics"][name]["mean"], abs=1e-6)


def test_named_evaluation_against_the_cue_masks(runs, tiny_synth, tmp_path):
    """Scoring the same run against another mask root goes to its own file, and never reuses an
    evaluation made against other masks."""
    run = tmp_path / "align"
    shutil.copytree(runs["align"], run)
    main = _json(run / EVALUATION_FILE)
    loc = ["iou", "pointing_game", "energy_pointing_game"]
    kw = dict(batch_size=8, max_batches=1, metrics=loc)
    cue = evaluate_run(run, EvalConfig(masks=tiny_synth / "cues", name="cue", **kw))
    assert (run / "evaluation-cue.json").is_file() and _json(run / EVALUATION_FILE) == main
    assert cue["config"]["masks"].endswith("cues") and main["config"]["masks"].endswith("masks")
    obj = evaluate_run(run, EvalConfig(masks=tiny_synth / "masks", name="object", **kw))
    for key, split in cue["splits"].items():
        n = split["n"]
        assert obj["splits"][key]["n"] == n  # the same images, scored against disjoint masks
        # Object and cue never overlap, so per image the CAM energy inside each adds up to <= 1.
        both = (split["metrics"]["energy_pointing_game"]["mean"]
                + obj["splits"][key]["metrics"]["energy_pointing_game"]["mean"])
        assert both <= 1 + 1e-6
        # The soft coverage, not the thresholded IoU: a barely trained masker (initialised near
        # 0.12) can be below 0.5 everywhere, which gives IoU 0 against both mask sets.
        assert (split["extras"]["masker_coverage"]["mean"]
                != obj["splits"][key]["extras"]["masker_coverage"]["mean"])
    # The main file asked for with other masks is recomputed, not returned stale.
    again = evaluate_run(run, EvalConfig(masks=tiny_synth / "cues", **kw))
    assert again["config"]["masks"].endswith("cues")
    with pytest.raises(ValueError, match="evaluation name"):
        evaluate_run(run, EvalConfig(name="../x"))


def test_evaluate_on_a_device_this_machine_lacks_is_a_config_error(tmp_path, monkeypatch):
    """`align evaluate RUN --device cuda` without CUDA ended in torch's traceback ("Found no
    NVIDIA driver"); `align train` refuses the same device with a message. It is refused
    before the checkpoint is read (the golden run has none)."""
    from align.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "erm"
    shutil.copytree(GOLDEN_RUNS[0], run)
    with pytest.raises(ConfigError, match="device 'cuda:1' requested but CUDA is not available"):
        evaluate_run(run, EvalConfig(device="cuda:1"))


def test_evaluate_errors_name_the_problem(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluate_run(tmp_path / "nowhere")
    with pytest.raises(KeyError, match="gradcam"):
        evaluate_run(runs["erm"], EvalConfig(explainer="lime"))
    moved = tmp_path / "moved"
    shutil.copytree(runs["erm"], moved)
    cfg = _json(moved / "config.json")
    ds = _json(moved / "dataset.json")
    cfg["data"] = ds["root"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(cfg))
    (moved / "dataset.json").write_text(json.dumps(ds))
    with pytest.raises(FileNotFoundError, match="image root"):
        evaluate_run(moved)


# ------------------------------------------------------------------ report: golden tables
def test_golden_tables_byte_for_byte(tmp_path):
    assert len(GOLDEN_RUNS) == 4
    write_tables(GOLDEN_RUNS, tmp_path)
    if os.environ.get("UPDATE_GOLDEN"):
        for name in TABLE_FILES:
            shutil.copy(tmp_path / name, GOLDEN / "report" / name)
    for name in TABLE_FILES:
        assert (tmp_path / name).read_bytes() == (GOLDEN / "report" / name).read_bytes(), name


def test_a_run_named_twice_is_counted_once(tmp_path):
    """A run named as `r` and `/abs/r`, or named and inside a folder also named, was read twice:
    listed twice, and weighed twice in its seed's means wherever the seed has other runs (the
    in-domain columns of a leave-one-domain-out sweep)."""
    named = [*GOLDEN_RUNS, Path(os.path.relpath(GOLDEN_RUNS[0])), GOLDEN / "runs"]
    index = make_report(named, tmp_path, figures=False)
    assert index.read_text().count("<td><code>") == len(GOLDEN_RUNS)  # the list of runs
    for name in TABLE_FILES:
        assert (tmp_path / name).read_bytes() == (GOLDEN / "report" / name).read_bytes(), name


def test_runs_on_two_dataset_folders_with_the_same_domain_names_get_two_tables(tmp_path):
    """Runs on two datasets whose domains share names (the synthetic regimes' do) were grouped
    into one table and averaged as seeds of one method. Each folder now gets its own table, named
    in its title, with the numbers of that folder's runs alone."""
    runs = []
    for folder, data in (("a", None), ("b", "other/images")):
        for run in GOLDEN_RUNS:
            copy = tmp_path / folder / run.relative_to(GOLDEN / "runs")
            shutil.copytree(run, copy)
            if data:
                config = json.loads((copy / "config.json").read_text())
                (copy / "config.json").write_text(json.dumps({**config, "data": data}))
            runs.append(copy)
    make_report(runs, tmp_path / "report", figures=False)
    golden = (GOLDEN / "report" / "tables.md").read_text()
    text = (tmp_path / "report" / "tables.md").read_text()
    titles = [line for line in text.splitlines() if line.startswith("## ")]
    (title,) = [line for line in golden.splitlines() if line.startswith("## ")]
    assert titles == [f"## data/images, {title[3:]}", f"## other/images, {title[3:]}"]
    # Each table is the golden one (two seeds per method), not a mean over four runs.
    first, second = text.split(titles[1])
    body = golden.split(title)[1]
    assert first.split(titles[0])[1].strip() == body.strip() == second.strip()


def test_masks_make_another_method_only_for_an_algorithm_that_learns_from_them(tmp_path):
    """An ERM seed trained without --masks (masks feed ERM's evaluation only) was split into a
    row of its own, `erm (masks=None)`; for GRADIA, two masks folders remain two methods."""
    from align.report.collect import RunRecord

    runs = []
    for run in GOLDEN_RUNS:
        copy = tmp_path / "runs" / run.relative_to(GOLDEN / "runs")
        shutil.copytree(run, copy)
        if copy.parent.name == "erm" and copy.name == "seed1":
            config = json.loads((copy / "config.json").read_text())
            (copy / "config.json").write_text(json.dumps({**config, "masks": None}))
        runs.append(copy)
    make_report(runs, tmp_path / "report", figures=False)
    text = (tmp_path / "report" / "tables.md").read_text()
    assert text == (GOLDEN / "report" / "tables.md").read_text()

    def variant(algorithm: str, masks: str) -> dict:
        config = {"algorithm": algorithm, "masks": masks, "hparams": {}}
        return RunRecord(tmp_path, config, {}, {}, [], None).variant()

    assert variant("gradia", "gt") != variant("gradia", "sam")
    assert variant("erm", "gt") == variant("erm", "sam")


def _golden_with_domain(tmp_path: Path, name: str, *others: str) -> list[Path]:
    """The golden runs copied with their training domain "photo" renamed `name` (and "sketch",
    "noisy" renamed `others`) in every JSON file; the examples are of "texture", so examples.npz
    and its checksum stay valid."""
    renames = dict(zip(("photo", "sketch", "noisy"), (name, *others)))
    runs = []
    for run in GOLDEN_RUNS:
        copy = tmp_path / "runs" / run.relative_to(GOLDEN / "runs")
        shutil.copytree(run, copy)
        for f in [*copy.glob("*.json"), copy / "results.jsonl"]:
            text = f.read_text()
            for old, new in renames.items():
                text = text.replace(old, json.dumps(new)[1:-1])
            f.write_text(text)
        runs.append(copy)
    return runs


def test_domain_names_are_shown_as_named(tmp_path):
    """A domain is a folder name: TerraIncognita's 'location_38' was shown and written to the CSV
    as 'location 38' (the metrics' display rule), so the CSV no longer matched the domain."""
    write_tables(_golden_with_domain(tmp_path, "location_38"), tmp_path / "report")
    rows = list(csv.DictReader((tmp_path / "report" / "tables.csv").open()))
    in_domain = {r["column"] for r in rows if r["table"] == "accuracy_in_domain"}
    assert in_domain == {"location_38", "noisy", "sketch", "avg"}
    assert {r["column"] for r in rows if r["table"] == "iou_in_domain"} == in_domain
    assert "| location_38 ↑ |" in (tmp_path / "report" / "tables.md").read_text()
    assert "& location\\_38 $\\uparrow$ &" in (tmp_path / "report" / "tables.tex").read_text()
    assert "insertion AUC" in {r["column"] for r in rows}  # metric columns keep their names


def test_terminal_tables_show_domain_names_with_brackets(tmp_path):
    """rich reads "[night]" as markup: the tables `align train` and `align evaluate` print showed
    a domain 'site[night]' as 'site', and a run directory 'runs/[b]x' as 'runs/x'."""
    from io import StringIO

    from rich.console import Console

    from align.ui import evaluation_table, print_summary

    run = RunFiles(_golden_with_domain(tmp_path, "site[night]")[0])
    assert run.config()["algorithm"] == "align"  # has a masker: its IoU table is printed too
    console = Console(file=StringIO(), width=300)
    console.print(evaluation_table(run.evaluation(), "runs/[b]x"))
    print_summary(console, {"align": (run.summary(), run.protocol())})
    out = console.file.getvalue()
    assert "runs/[b]x (step" in out and "site[night]_out" in out
    assert out.count("│ site[night]") >= 2  # the accuracy and masker IoU tables' rows
    assert "│ site " not in out


def test_golden_best_marks_follow_each_columns_direction():
    """In the golden CSV, '*' marks exactly the best shown mean of each column, by direction."""
    rows = list(csv.DictReader((GOLDEN / "report" / "tables.csv").open()))
    columns: dict[tuple, list[dict]] = {}
    for r in rows:
        columns.setdefault((r["setting"], r["table"], r["column"]), []).append(r)
    lower_seen = 0
    for key, cells in columns.items():
        vals = [c for c in cells if c["mean"]]
        if len(vals) < 2 or not cells[0]["direction"]:
            assert not any(c["best"] for c in cells), key
            continue
        pick = max if cells[0]["direction"] == "higher" else min
        best = pick(round(float(c["mean"]), 2) for c in vals)
        assert {c["method"] for c in vals if c["best"] == "*"} == {
            c["method"] for c in vals if round(float(c["mean"]), 2) == best}, key
        lower_seen += cells[0]["direction"] == "lower"
    assert lower_seen >= 2  # sufficiency and deletion columns were checked


def test_best_marking_direction_and_ties():
    c = lambda v: Cell(v, None, 1)  # noqa: E731
    t = Table("t", "t", ["acc", "sufficiency", "deletion", "area"],
              ["higher", "lower", "lower", None],
              [("a", 1, [c(0.9), c(0.10), c(0.300), c(0.5)]),
               ("b", 1, [c(0.8), c(0.05), c(0.30001), None]),
               ("c", 1, [None, c(0.20), c(0.4), c(0.7)])])
    # deletion: 30.00 and 30.00 tie at the shown precision; "area" has no direction.
    assert t.best() == [{0}, {1}, {0, 1}, set()]
    md = to_markdown([])  # renders without settings
    assert md.startswith("# Results")


def test_run_reader_accessors_and_errors_name_the_file(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(GOLDEN_RUNS[0], run)
    files = RunFiles(run)
    assert files.config()["algorithm"] == "align" and files.records() and not files.is_done()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{run}: no splits.json")):
        files.splits()
    (run / "config.json").write_text("{cut")
    with pytest.raises(RunDirError, match=re.escape(f"{run / 'config.json'} is not valid JSON")):
        files.config()
    (run / "results.jsonl").write_text('{"step": 1}\n{cut\n')
    with pytest.raises(RunDirError, match="results.jsonl:2"):
        files.records()
    ev = files.evaluation()
    (run / EVALUATION_FILE).write_text(json.dumps({**ev, "version": 1}))
    with pytest.raises(RunDirError, match="another version of align.*`align evaluate "):
        files.evaluation()


def test_one_aggregation_rule_and_one_table_writer():
    from align.report.stats import format_mean_std, mean_std
    from align.report.writers import csv_table, markdown_table

    # One value: no std (None, the mean alone), in every table of the project.
    assert mean_std([0.5]) == (0.5, None, 1) and format_mean_std(mean_std([0.5]), 100) == "50.0"
    two = mean_std([0.1, 0.3])
    assert two.std == pytest.approx(2 ** 0.5 / 10) and format_mean_std(two, 100) == "20.0 ± 14.1"
    with pytest.raises(ValueError, match="no values"):
        mean_std([])
    assert markdown_table(["a", "b"], [["x|y\nz", 1]], right=[False, True]) == (
        "| a | b |\n|---|---:|\n| x\\|y z | 1 |")
    assert csv_table(["a", "b"], [['x,"y"', 1]]) == 'a,b\n"x,""y""",1\n'
    with pytest.raises(ValueError, match="2 columns"):
        markdown_table(["a", "b"], [[1]])


# ------------------------------------------------------------------ report: grouping, errors
def _record(algo, seed, **hp):
    cfg = {"algorithm": algo, "seed": seed, "steps": 10, "hparams": {"lr": 1e-3, **hp}}
    proto = {"name": "lodo", "train_domains": ["a"], "test_domains": ["b"]}
    return RunRecord(Path(f"{algo}{seed}"), cfg, proto, {}, [], None)


def test_method_labels_get_a_suffix_only_for_differing_hparams():
    methods = group_methods([_record("align", 0, guidance="masker"), _record("erm", 0),
                             _record("align", 1, guidance="none"), _record("erm", 1),
                             _record("align", 1, guidance="masker")])
    assert [(m.label, m.seeds) for m in methods] == [
        ("erm", [0, 1]), ("align (guidance=masker)", [0, 1]), ("align (guidance=none)", [1])]


def test_report_errors_name_the_run_directory(tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(GOLDEN_RUNS[0], bad)
    (bad / "summary.json").unlink()
    with pytest.raises(RunDirError, match=re.escape(str(bad)) + ".*summary.json"):
        make_report([bad], tmp_path / "report")
    (bad / "summary.json").write_text("{not json")
    with pytest.raises(RunDirError, match="summary.json"):
        load_run_record(bad)


def test_report_refuses_a_named_run_that_is_training_further(tmp_path):
    """A finished run trained further (more --steps) and stopped keeps its old summary.json:
    named, it is refused as not finished (a folder of runs leaves it out), never reported with
    the numbers of its earlier, shorter training."""
    run = tmp_path / "erm"
    shutil.copytree(GOLDEN_RUNS[0], run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"")  # resumable, and no `done` marker
    with pytest.raises(RunDirError, match=re.escape(str(run)) + ": training has not finished"):
        make_report([run], tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_report_refuses_an_evaluation_of_a_checkpoint_training_has_replaced(tmp_path):
    """A run evaluated, then trained further (its best checkpoint moved from step 4 to 24): the
    report put step 4's explanation metrics beside step 24's accuracies. Named, it is refused;
    in a folder of runs, it gives its accuracies only."""
    run = tmp_path / "runs" / "erm"
    shutil.copytree(GOLDEN_RUNS[0], run)
    record = json.loads((run / EVALUATION_FILE).read_text())
    selected = json.loads((run / "summary.json").read_text())["training_domain_validation"]
    record["config"]["step"] = selected["step"] - 4  # evaluated before it trained further
    (run / EVALUATION_FILE).write_text(json.dumps(record))
    with pytest.raises(RunDirError, match=re.escape(
            f"{run}: its evaluation.json scored the best checkpoint of step "
            f"{selected['step'] - 4}, but that checkpoint is now step {selected['step']}")):
        make_report([run], tmp_path / "report")
    html = make_report([tmp_path / "runs"], tmp_path / "report").read_text()
    assert f"{run}: not evaluated, accuracy only" in html


# ------------------------------------------------------------------ report: figures and html
def _local_refs(index: Path) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]+)"', index.read_text())


def test_report_of_golden_runs_has_every_figure_and_links_only_existing_files(tmp_path):
    index = make_report(GOLDEN_RUNS, tmp_path / "report")
    refs = _local_refs(index)
    assert refs and all((index.parent / r).is_file() for r in refs)
    assert not [r for r in refs if "://" in r or r.startswith("/")]
    text = index.read_text()
    assert "<script" not in text and "stylesheet" not in text
    # Changed with issue 9 (the report read checkpoints and ran Grad-CAM, so the golden runs,
    # which have none, had no examples figure and the golden test did not cover it): the report
    # now draws the examples from the examples.npz that `align evaluate` saved.
    assert "skipped" not in text
    figs = tmp_path / "report" / "figures"
    assert {p.stem.split("-")[0] for p in figs.glob("*.png")} == {"examples", "curves", "training"}
    assert list(figs.glob("curves-*.pdf")) and list(figs.glob("examples-*.pdf"))


def test_figure_links_survive_odd_domain_names(tmp_path):
    """Figure files are named after the domains: a '#' began a URL fragment and a '%' a bad
    escape, so index.html showed no figure. A browser's reading of every link names a file."""
    from html import unescape
    from urllib.parse import unquote, urlsplit

    runs = _golden_with_domain(tmp_path, 'cam #1 50% <a&b> "q"?')
    index = make_report(runs, tmp_path / "report")
    refs = _local_refs(index)
    assert len([r for r in refs if r.startswith("figures/")]) >= 6
    for ref in refs:
        url = urlsplit(unescape(ref))
        assert not (url.scheme or url.query or url.fragment), ref
        assert (index.parent / unquote(url.path)).is_file(), ref


def test_figures_of_settings_with_long_domain_names_are_written(tmp_path):
    """A figure is named after every domain of its setting: three domain names of 70 characters
    made a name over the file system's 255 bytes, and `align report` failed ('File name too
    long'). Long names are cut and given a hash of the whole, so two settings stay apart."""
    long = [f"camera_trap_site_{i}_é_with_a_rather_long_descriptive_name_of_the_place"
            for i in range(3)]
    index = make_report(_golden_with_domain(tmp_path, *long), tmp_path / "report")
    figs = list((tmp_path / "report" / "figures").iterdir())
    assert len(figs) == 8 and all(len(p.name.encode()) <= 200 for p in figs)
    refs = _local_refs(index)
    assert all(f"figures/{quote(p.name)}" in refs for p in figs)
    assert figures.file_stem("a" * 300) != figures.file_stem("a" * 299 + "b")
    assert figures.file_stem("curves-lodo-a-b") == "curves-lodo-a-b"


def test_figure_text_with_dollar_signs_is_text_not_mathtext(tmp_path, monkeypatch):
    """Matplotlib reads text between two "$" as mathtext: domains 'US$1 \\night' and 'US$2' in a
    figure's title made `align report` fail (unknown symbol \\night); a single pair only mangled
    the name. Every user name (domain, class, method, run) is drawn as written."""
    from matplotlib.text import Text

    drawn = []
    real = Text.set_text
    monkeypatch.setattr(Text, "set_text", lambda self, s: drawn.append(str(s)) or real(self, s))
    make_report(_golden_with_domain(tmp_path, "US$1 \\night", "US$2"), tmp_path / "report")
    titles = [t for t in drawn if "US" in t]
    assert titles and all(t.count("\\$") == t.count("$") for t in titles), titles


def test_examples_figure_is_drawn_from_the_saved_examples_only(tmp_path, monkeypatch):
    """The report loads no network: with the model loader broken it still draws the examples,
    one row per saved image (or `n_examples`), the same images for every method."""
    import align.api

    def no_network(*args, **kw):
        raise AssertionError("the report loaded a network")

    monkeypatch.setattr(align.api, "load_run", no_network)
    shown = []
    real = figures._examples_grid
    monkeypatch.setattr(figures, "_examples_grid",
                        lambda images, labels, columns: shown.append((images, labels, columns))
                        or real(images, labels, columns))
    make_report(GOLDEN_RUNS, tmp_path / "report", n_examples=4)
    images, labels, columns = shown[0]
    saved = RunFiles(GOLDEN / "runs" / "erm" / "seed0").examples()
    assert images.shape[0] == len(labels) == 4 and list(labels) == list(saved.labels[:4])
    assert [c[0] for c in columns] == ["erm\nGrad-CAM", "align\nGrad-CAM", "align\nmasker",
                                       "ground truth"]


def test_report_refuses_a_run_that_was_not_evaluated(tmp_path):
    run = tmp_path / "erm"
    shutil.copytree(GOLDEN_RUNS[0], run)
    (run / EVALUATION_FILE).unlink()
    with pytest.raises(RunDirError, match=re.escape(f"{run}: no evaluation.json") + ".*"
                       + re.escape(f"`align evaluate {run}`")):
        make_report([run], tmp_path / "report")
    shutil.copy(GOLDEN_RUNS[0] / EVALUATION_FILE, run / EVALUATION_FILE)
    (run / "examples.npz").write_bytes(b"not the file")  # e.g. a copy cut short
    with pytest.raises(RunDirError, match="examples.npz is not the file evaluation.json records"):
        make_report([run], tmp_path / "report")


def test_report_of_trained_runs_has_every_figure(runs, tmp_path):
    index = make_report([runs["erm"], runs["align"]], tmp_path / "report", n_examples=3)
    figs = tmp_path / "report" / "figures"
    stems = {p.stem.split("-")[0] for p in figs.glob("*.png")}
    assert stems == {"examples", "curves", "training"}
    assert len(list(figs.glob("training-*.png"))) == 2
    assert {p.stem for p in figs.glob("*.png")} == {p.stem for p in figs.glob("*.pdf")}
    refs = _local_refs(index)
    assert all((index.parent / r).is_file() for r in refs)
    assert {f"figures/{p.name}" for p in figs.iterdir()} <= set(refs)  # every figure shown
    for name in TABLE_FILES:
        assert name in refs and (index.parent / name).is_file()


def test_runs_from_before_precision_group_with_fp32_runs():
    """A run whose config.json predates `precision`/`channels_last` is the same method as an
    fp32 run of today (it was labelled a separate variant before this fix)."""
    from align.report.collect import RunRecord, variant_key

    old = {"algorithm": "erm", "lr": 1e-3, "hparams": {"lr": 1e-3}}
    new = {**old, "precision": "fp32", "channels_last": True}
    keys = {variant_key(RunRecord.variant(type("R", (), {"config": c})())) for c in (old, new)}
    assert len(keys) == 1
