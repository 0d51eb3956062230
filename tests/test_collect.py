"""`align collect`: model selection across checkpoints and hyperparameter draws, the tables, the
selected hyperparameters and what a partial sweep misses; `align report` on a sweep folder.

Known answers come from sweeps written by hand (`sweep_fakes`); the golden tables
(`tests/golden/collect/`) from `sweep_fakes.golden_sweep`. After an intended change:

    UPDATE_GOLDEN=1 python -m pytest -q tests/test_collect.py -k golden

and review the diff.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from align.cli import app
from align.report.build import make_report
from align.report.collect_sweep import OUTPUT_FILES, collect, write_collect
from align.report.stats import MeanStd, format_mean_se, seed_cells
from align.report.sweep_runs import draw_id, read_sweep
from align.report.writers import TexRaw, latex_table, tex_escape
from align.rundir import RunDirError
from align.training.selection import SWEEP_SELECTIONS, select_draw

from sweep_fakes import golden_sweep, protocol_json, record, write_run

GOLDEN = Path(__file__).parent / "golden" / "collect"
D0, D1 = {"lr": 0.001}, {"lr": 0.0001}


def _known_sweep(root: Path) -> Path:
    """ERM holding out A, seeds 0 and 1, draws D0 and D1, two checkpoints each (steps 2, 4):
    records (val, test `in`, test `out`, validation ce). Worked out by hand:

    | seed | draw | step 2               | step 4               |
    |------|------|----------------------|----------------------|
    | 0    | D0   | .70, .50, .60, .9    | .60, .55, .65, .8    |
    | 0    | D1   | .80, .62, .50, 1.0   | .75, .64, .55, 1.1   |
    | 1    | D0   | .85, .70, .70, .5    | .80, .72, .75, .6    |
    | 1    | D1   | .65, .66, .80, .7    | .70, .68, .85, .4    |

    training-domain validation: seed 0 -> D1 step 2 (.80 > .70): .62; seed 1 -> D0 step 2: .70.
    oracle (last checkpoints, test `out`): seed 0 -> D0 (.65 > .55): .55; seed 1 -> D1: .68.
    val_loss: seed 0 -> D0 step 4 (.8 < 1.0): .55; seed 1 -> D1 step 4 (.4 < .5): .68.
    last (last checkpoints, val): seed 0 -> D1 (.75 > .60): .64; seed 1 -> D0 (.80): .72.
    """
    p = protocol_json("lodo", ("A",))
    rows = {(0, 0): [(2, .70, .50, .60, .9), (4, .60, .55, .65, .8)],
            (0, 1): [(2, .80, .62, .50, 1.0), (4, .75, .64, .55, 1.1)],
            (1, 0): [(2, .85, .70, .70, .5), (4, .80, .72, .75, .6)],
            (1, 1): [(2, .65, .66, .80, .7), (4, .70, .68, .85, .4)]}
    for (seed, draw), recs in rows.items():
        write_run(root / f"erm/seed{seed}/draw{draw}", "erm", p,
                  [record(p, *r) for r in recs], seed=seed, hparams=(D0, D1)[draw])
    return root


EXPECTED = {  # selection -> (draw of seed 0, draw of seed 1), (test accuracies)
    "training_domain_validation": ((D1, D0), (.62, .70)),
    "oracle": ((D0, D1), (.55, .68)),
    "val_loss": ((D0, D1), (.55, .68)),
    "last": ((D1, D0), (.64, .72)),
}


# ------------------------------------------------------------------ selection
@pytest.mark.parametrize("name", list(EXPECTED))
def test_selection_across_draws_has_the_known_answer(tmp_path, name):
    sweep = read_sweep(_known_sweep(tmp_path))
    (section,) = collect(sweep, [name])
    draws, accs = EXPECTED[name]
    for seed in (0, 1):
        chosen = section.choices[("erm", ("A",), seed)]
        assert chosen.key.hparams == draws[seed]
        assert chosen.record["acc"]["A_in"] == accs[seed]
    (table,) = section.tables
    cell = table.rows[0][2][0]
    assert table.columns == ["A", "avg"] and table.rows[0][:2] == ("erm", 2)
    assert cell.mean == pytest.approx(sum(accs) / 2) and cell.n == 2
    assert cell.std == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)


def test_oracle_differs_from_training_domain_validation_and_ranks_on_the_test_domain(tmp_path):
    sweep = read_sweep(_known_sweep(tmp_path))
    tdv, oracle = collect(sweep, ["training_domain_validation", "oracle"])
    assert tdv.tables[0].rows[0][2][0].mean == pytest.approx(.66)
    assert oracle.tables[0].rows[0][2][0].mean == pytest.approx(.615)
    # The oracle ranks the last checkpoints on the held-out domain's `out` split.
    assert oracle.choices[("erm", ("A",), 0)].score == pytest.approx(.65)
    assert oracle.choices[("erm", ("A",), 0)].record["step"] == 4


def test_select_draw_ties_go_to_the_first_draw_and_warm_up_is_no_candidate():
    p = protocol_json("lodo", ("A",))
    a = [record(p, 2, .9, .1, .1), record(p, 4, .5, .5, .5)]
    b = [record(p, 2, .5, .2, .2), record(p, 4, .5, .6, .6)]
    tdv = SWEEP_SELECTIONS.get("training_domain_validation")
    assert select_draw(tdv, [("a", a, 0), ("b", b, 0)], p).key == "a"
    # a's step 2 is a warm-up checkpoint: its best candidate is step 4 (.5), tied with b's step
    # 2 (.5, the earlier checkpoint of b); the tie between draws goes to the one given first.
    assert select_draw(tdv, [("b", b, 0), ("a", a, 2)], p).key == "b"
    assert select_draw(tdv, [("a", a, 2), ("b", b, 0)], p).record["step"] == 4
    # records without cross-entropies: val_loss selects nothing
    old = [{k: v for k, v in r.items() if k not in ("ce", "n")} for r in a]
    assert select_draw(SWEEP_SELECTIONS.get("val_loss"), [("a", old, 0)], p) is None


def test_draw_ids_are_stable_and_name_the_hyperparameters():
    assert draw_id({"lr": 0.001, "b": [1, 2]}) == draw_id({"b": [1, 2], "lr": 0.001})
    assert draw_id({"lr": 0.001}) != draw_id({"lr": 0.0001})
    assert draw_id({"lr": 0.001}) == "d368ce5a"  # sha256 of {"lr":0.001}: the same everywhere


# ------------------------------------------------------------------ shapes and golden files
@pytest.fixture(scope="module")
def golden_out(tmp_path_factory):
    root = golden_sweep(tmp_path_factory.mktemp("sweep") / "sweep")
    out = root.parent / "collected"
    files, missing = write_collect(root, out)
    return root, out, missing


@pytest.mark.parametrize("name", OUTPUT_FILES[:-1])
def test_golden_collect_tables_byte_for_byte(golden_out, name):
    _, out, _ = golden_out
    got = (out / name).read_text()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        (GOLDEN / name).write_text(got)
    assert got == (GOLDEN / name).read_text(), f"{name} differs from tests/golden/collect/{name}"


def test_golden_sweep_names_what_is_missing(golden_out):
    _, out, missing = golden_out
    assert missing == [
        "lodo/align/test-B/seed1/draw1: not finished (step 4 of 4)",
        "toy, lodo (A, B, C): align: test B, seed 1: 1 of 2 draws finished",
    ]
    text = (out / "results.md").read_text()
    assert text.endswith("## Missing\n\n- " + "\n- ".join(missing) + "\n")


def test_tables_take_the_protocols_shapes(golden_out):
    _, out, _ = golden_out
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    tables = {(r["setting"], r["table"]) for r in rows}
    assert tables == {("toy-in_distribution-A-B-C", "accuracy"), ("toy-lodo-A-B-C", "accuracy"),
                      ("toy-single_source-A-B-C", "accuracy"),
                      ("toy-single_source-A-B-C", "matrix:erm")}
    matrix = {(r["row"], r["column"]): r["mean"] for r in rows
              if r["table"] == "matrix:erm" and r["selection"] == "oracle"}
    assert matrix[("A", "A")] == "" and matrix[("B", "B")] == ""  # a source is not its target
    assert all(matrix[(s, t)] for s in "AB" for t in "ABC" if s != t)
    assert float(matrix[("A", "avg")]) == pytest.approx(
        (float(matrix[("A", "B")]) + float(matrix[("A", "C")])) / 2)
    in_dist = {r["column"] for r in rows if r["setting"].startswith("toy-in_dist")}
    assert in_dist == {"A", "B", "C", "avg"}


def test_selected_json_holds_what_rerunning_needs(golden_out):
    root, out, _ = golden_out
    selected = json.loads((out / "selected.json").read_text())
    first = selected["selected"][0]
    assert set(first) >= {"setting", "selection", "method", "env", "seed", "draw", "hparams",
                          "run", "step", "score", "test_acc"}
    assert (root / first["run"] / "config.json").is_file()
    assert first["draw"] == draw_id(first["hparams"])


# ------------------------------------------------------------------ partial sweeps
def test_a_partial_sweep_names_every_missing_piece(tmp_path):
    root = _known_sweep(tmp_path / "sweep")
    p = protocol_json("lodo", ("B",))
    # held out B: seed 0 has one of two draws finished, the other interrupted; seed 1 none
    write_run(root / "erm/B/seed0/draw0", "erm", p, [record(p, 2, .7, .5, .5)], seed=0,
              hparams=D0)
    write_run(root / "erm/B/seed0/draw1", "erm", p, [record(p, 2, .7, .5, .5)], seed=0,
              hparams=D1, finished=False)
    shutil.copytree(root / "erm/seed0/draw0", root / "copy/of/draw0")  # the same run twice
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    _, missing = write_collect(root, tmp_path / "out")
    assert missing[0].startswith(
        f"broken: unreadable ({root / 'broken' / 'config.json'} is not valid JSON")
    assert missing[1:] == [
        "erm/B/seed0/draw1: not finished (step 2 of 4)",
        "erm/seed0/draw0: the same run as copy/of/draw0 (ignored)",
        "toy, lodo (A, B, C): erm: test B, seed 0: 1 of 2 draws finished",
        "toy, lodo (A, B, C): erm: test B, seed 1: no finished run",
    ]


def test_a_foreign_folder_below_a_sweep_is_unreadable_not_a_crash(tmp_path):
    """A folder of another tool with its own config.json and protocol.json (valid JSON, not an
    align run's) is named as unreadable; the runs beside it are still collected."""
    root = _known_sweep(tmp_path / "sweep")
    (root / "other").mkdir()
    (root / "other" / "config.json").write_text(json.dumps({"name": "a model"}))
    (root / "other" / "protocol.json").write_text(json.dumps({"name": "lodo"}))
    _, missing = write_collect(root, tmp_path / "out")
    assert missing == ["other: unreadable (its config.json or protocol.json is not an align "
                       "run's: KeyError 'data')"]


def test_report_and_collect_never_overwrite_a_users_files_in_out(tmp_path):
    """`--out` at a folder of the user's with an index.html (results.md) of its own: it was
    overwritten. Now refused before anything is written; their own earlier output (marked, or
    from before the marker) is replaced as before."""
    runs = Path(__file__).parent / "golden" / "runs"
    sweep = _known_sweep(tmp_path / "sweep")
    for out, make, name in ((tmp_path / "site", lambda o: make_report([runs], o), "index.html"),
                            (tmp_path / "notes", lambda o: write_collect(sweep, o), "results.md")):
        out.mkdir()
        (out / name).write_text("mine")
        with pytest.raises(FileExistsError, match=f"--out {out} holds {name}, not written by"):
            make(out)
        assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == "mine"
        (out / name).unlink()
        make(out)
        make(out)  # its own output: replaced
        next(out.glob(".align-*")).unlink()  # as written before the marker: still recognised
        make(out)


def test_collect_cli_writes_every_file_and_prints_what_is_missing(tmp_path):
    root = _known_sweep(tmp_path / "sweep")
    p = protocol_json("lodo", ("B",))
    write_run(root / "erm/B/seed0/draw0", "erm", p, [record(p, 2, .7, .5, .5)], seed=0,
              hparams=D0, finished=False)
    res = CliRunner().invoke(app, ["collect", str(root), "--selection", "oracle"])
    assert res.exit_code == 0, res.output
    assert all((root / "collected" / name).is_file() for name in OUTPUT_FILES)
    assert "missing: 3" in res.output and "test B, seed 1: no finished run" in res.output
    assert "Selection: test-domain validation (oracle)" in (root / "collected" / "results.md"
                                                            ).read_text()
    bad = CliRunner().invoke(app, ["collect", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "no run directory below it" in bad.output


# ------------------------------------------------------------------ writers and stats
def test_latex_cells_are_escaped_unless_raw():
    text = latex_table(["a_b", TexRaw("$x$")], [["50% & more #1", TexRaw("\\textbf{1}")]],
                       caption="x_y {z}", label="tab:k", align="lr")
    assert "a\\_b & $x$ \\\\" in text
    assert "50\\% \\& more \\#1 & \\textbf{1} \\\\" in text
    assert "\\caption{x\\_y \\{z\\}}" in text
    assert tex_escape("a\\b~c^d\ne") == "a\\textbackslash{}b\\textasciitilde{}c\\textasciicircum{}d e"
    with pytest.raises(ValueError, match="column spec"):
        latex_table(["a"], [], caption="", label="tab:k", align="lr")


def test_mean_standard_error_and_std():
    m = MeanStd(0.66, 0.0565685, 2)
    assert format_mean_se(m, 100, 2) == "66.00 ± 4.00 (sd 5.66)"
    assert format_mean_se(MeanStd(0.5, None, 1), 100, 2) == "50.00"  # one seed: no spread
    assert format_mean_se(None) == "-"
    cells = seed_cells({0: {"A": 0.5, "B": 0.7}, 1: {"A": 0.7}}, ["A", "B"], avg=True)
    assert cells[0] == (pytest.approx(0.6), pytest.approx(0.1414213), 2)
    assert cells[1] == (0.7, None, 1) and cells[2] == (pytest.approx(0.6), None, 1)


# ------------------------------------------------------------------ align report on a sweep
def test_report_of_a_sweep_folder_leaves_out_unfinished_and_notes_unevaluated(tmp_path):
    """The golden report runs (evaluated, no `done`: copies of results) and, beside them in the
    folder, a run not evaluated and one not finished: the report has the evaluated runs' every
    table, the unevaluated run's accuracies, and names both in its notes."""
    golden = Path(__file__).parent / "golden" / "runs"
    sweep = tmp_path / "sweep"
    shutil.copytree(golden, sweep)
    shutil.copytree(golden / "erm" / "seed1", sweep / "erm" / "seed2")
    (sweep / "erm" / "seed2" / "evaluation.json").unlink()
    config = json.loads((sweep / "erm" / "seed2" / "config.json").read_text())
    (sweep / "erm" / "seed2" / "config.json").write_text(json.dumps({**config, "seed": 2}))
    shutil.copytree(golden / "erm" / "seed1", sweep / "erm" / "seed3")
    (sweep / "erm" / "seed3" / "checkpoints").mkdir()
    (sweep / "erm" / "seed3" / "checkpoints" / "last.pt").write_bytes(b"")
    index = make_report([sweep], tmp_path / "report")
    html = index.read_text()
    assert f"{sweep / 'erm' / 'seed3'}: not finished, left out" in html
    assert f"{sweep / 'erm' / 'seed2'}: not evaluated, accuracy only" in html
    tables = (tmp_path / "report" / "tables.md").read_text()
    assert "| erm | 3 |" in tables  # seeds 0, 1 and the unevaluated 2 in the accuracy tables
    assert "| erm | 2 |" in tables  # the explanation metrics of the evaluated seeds
    shutil.move(sweep / "erm" / "seed3", tmp_path / "only" / "seed3")
    with pytest.raises(RunDirError, match="no finished run"):
        make_report([tmp_path / "only"], tmp_path / "r2")


# ------------------------------------------------------------------ a trained sweep
@pytest.fixture(scope="module")
def trained_sweep(tiny_synth, tmp_path_factory):
    """2 algorithms x 2 held-out domains x 2 seeds x 2 draws of tiny training (4 steps,
    evaluated every 2), in a layout of our own."""
    import torch

    from align.training.loop import Trainer

    from conftest import tiny_config

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained") / "sweep"
    for algo in ("erm", "mixup"):
        for env in ("texture", "photo"):
            for seed in (0, 1):
                for i, lr in enumerate((1e-3, 3e-3)):
                    Trainer(tiny_config(tiny_synth, root / f"{algo}-{env}-{seed}-{i}",
                                        algorithm=algo, test_domains=[env], seed=seed, steps=4,
                                        eval_every=2, hparams={"lr": lr})).run()
    return root


@pytest.mark.slow
def test_collect_of_a_trained_sweep_agrees_with_each_runs_summary(trained_sweep):
    """Per (algorithm, held-out domain, seed): training-domain validation picks the draw whose
    summary.json checkpoint has the best validation accuracy, and reports that checkpoint's test
    accuracy; the oracle, the draw whose last checkpoint scores best on the held-out `out`."""
    sweep = read_sweep(trained_sweep)
    (setting,) = sweep.settings
    assert [m.label for m in setting.methods] == ["erm", "mixup"]  # the registry's order
    assert not sweep.missing() and sweep.n_finished == 16
    tdv, oracle = collect(sweep, ["training_domain_validation", "oracle"])
    for m in setting.methods:
        assert len(m.draws()) == 2
        for (env, seed), draws in m.runs.items():
            runs = [r for _, r in sorted(draws.items())]
            summaries = [json.loads((r.path / "summary.json").read_text())
                         ["training_domain_validation"] for r in runs]
            best = max(range(2), key=lambda i: (summaries[i]["val_acc"], -i))
            chosen = tdv.choices[(m.label, env, seed)]
            assert chosen.key is runs[best]
            assert chosen.record["step"] == summaries[best]["step"]
            assert chosen.score == pytest.approx(summaries[best]["val_acc"])
            out = [r.records[-1]["acc"][f"{env[0]}_out"] for r in runs]
            picked = oracle.choices[(m.label, env, seed)]
            assert picked.key is runs[max(range(2), key=lambda i: (out[i], -i))]
            assert picked.record is picked.key.records[-1]


@pytest.mark.slow
def test_align_collect_and_align_report_on_a_trained_sweep(trained_sweep, tmp_path):
    res = CliRunner().invoke(app, ["collect", str(trained_sweep), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "missing" not in res.output
    text = (tmp_path / "c" / "results.md").read_text()
    assert "|  | seeds | photo | texture | avg |" in text
    res = CliRunner().invoke(app, ["report", str(trained_sweep), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r" / "index.html").read_text()
    assert html.count("not evaluated, accuracy only") == 16
    assert "Accuracy, out-of-distribution" in (tmp_path / "r" / "tables.md").read_text()

