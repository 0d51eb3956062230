"""`align sweep`'s grid: cells, hyperparameter draws, --set, run names, checks before any write,
the sweep file, the manifest and the dry run (no training here; tests/test_sweep_launch.py
trains)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from align.cli import app, expand_multi
from align.errors import ConfigError
from align.experiments.sweep_grid import (SweepSpec, config_hash, default_name, draw_hparams,
                                          expand, scope_hparams)
from align.experiments.sweep_run import (SweepInputs, read_manifest, read_sweep_file,
                                         sweep_spec, write_manifest)

#: Every training setting of a tiny CPU run (the shape of a sweep file's top level).
TINY = dict(backbone="smallcnn", pretrained=None, image_size=32, batch_size=2, eval_every=2,
            eval_batch_size=64, num_workers=0, device="cpu", steps=4)


def fake_domainbed(root: Path, domains=("A", "B", "C"), classes=("cat", "dog"), n=6) -> Path:
    """A DomainBed-layout folder of random 32 px images."""
    rng = np.random.default_rng(0)
    for d in domains:
        for c in classes:
            (root / d / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / d / c / f"{i}.png")
    return root


def spec(**kw) -> SweepSpec:
    base = dict(algorithms=("erm", "irm"), domains=("A", "B", "C"),
                settings={**TINY, "data": "/data/x"}, seeds=(0, 1))
    return SweepSpec(**{**base, **kw})


def test_the_grid_is_algorithms_x_cells_x_draws_x_seeds_in_that_order(tmp_path):
    runs = expand(spec(protocols=("lodo", "single_source", "in_distribution"), n_hparams=2),
                  tmp_path)
    # 2 algorithms x (3 held-out + 3 sources + 1) cells x 2 draws x 2 seeds
    assert len(runs) == 2 * 7 * 2 * 2
    first = runs[0]
    assert first.name == f"runs/erm/lodo-A/h0/s0-{first.point.hash}"
    assert first.config.out == str(tmp_path / first.name)
    assert (first.config.algorithm, first.config.protocol, first.config.test_domains,
            first.config.seed) == ("erm", "lodo", ["A"], 0)
    assert [r.point[1:6] for r in runs[:4]] == [
        ("lodo", "lodo-A", ("A",), 0, 0), ("lodo", "lodo-A", ("A",), 0, 1),
        ("lodo", "lodo-A", ("A",), 1, 0), ("lodo", "lodo-A", ("A",), 1, 1)]
    ss = [r for r in runs if r.point.protocol == "single_source"]
    assert {r.point.cell for r in ss} == {"single_source-A", "single_source-B", "single_source-C"}
    assert all(r.config.train_domains == [r.point.domains[0]] and not r.config.test_domains
               for r in ss)
    ind = [r for r in runs if r.point.protocol == "in_distribution"]
    assert len(ind) == 2 * 2 * 2 and ind[0].name.startswith("runs/erm/in_distribution/h0/s0-")
    assert len({r.name for r in runs}) == len(runs)
    # the same grid again finds the same directories (a relaunch resumes them)
    again = expand(spec(protocols=("lodo", "single_source", "in_distribution"), n_hparams=2),
                   tmp_path)
    assert [r.name for r in again] == [r.name for r in runs]


def test_cells_can_be_restricted_and_a_restriction_no_protocol_takes_is_refused(tmp_path):
    runs = expand(spec(test_domains=("C",), seeds=(0,)), tmp_path)
    assert [r.point.cell for r in runs] == ["lodo-C", "lodo-C"]
    with pytest.raises(ConfigError, match="no protocol of this sweep \\(lodo\\) names train_domains"):
        expand(spec(train_domains=("A",)), tmp_path)
    with pytest.raises(ConfigError, match="unknown test domain\\(s\\) Z"):
        expand(spec(test_domains=("Z",)), tmp_path)


def test_a_repeated_algorithm_protocol_or_seed_is_named(tmp_path):
    """`--algorithms erm erm` was refused as "two runs of the grid got the same directory; the
    naming must tell every coordinate apart", which names neither the option nor the value."""
    for key, values, repeated in (("algorithms", ("erm", "erm"), "erm"),
                                  ("protocols", ("lodo", "in_distribution", "lodo"), "lodo"),
                                  ("seeds", (0, 1, 0), "0")):
        with pytest.raises(ConfigError, match=re.escape(f"sweep {key}: {list(values)} repeats "
                                                        f"{repeated}")):
            expand(spec(**{key: values}), tmp_path)


def test_draw_zero_is_the_base_and_later_draws_resample_only_searched_hparams(tmp_path):
    runs = expand(spec(algorithms=("irm",), n_hparams=2, seeds=(0,), test_domains=("A",),
                       base={"irm": {"lr": 1e-3, "dropout": 0.1}}), tmp_path)
    h0, h1 = (r.hparams for r in runs)
    assert h0["lr"] == 1e-3 and h0["dropout"] == 0.1 and h0["irm_lambda"] == 100.0
    # tests/test_core.py pins these draws of (draw 1, irm, name); a searched value replaces the
    # base, one without a search space keeps it
    assert h1["lr"] == pytest.approx(2.7077422664548503e-04, rel=1e-12)
    assert h1["weight_decay"] == pytest.approx(4.8724143545818866e-06, rel=1e-12)
    assert h1["irm_lambda"] == pytest.approx(9107.39601626599, rel=1e-12)
    assert h1["irm_penalty_anneal_iters"] == 10 and h1["dropout"] == 0.1
    assert draw_hparams("irm", 0) == {}
    assert set(draw_hparams("irm", 1)) == {"lr", "weight_decay", "irm_lambda",
                                           "irm_penalty_anneal_iters"}


def test_adding_a_hyperparameter_shifts_no_other_draw(tmp_path, monkeypatch):
    from align.algorithms import ALGORITHMS
    from align.hparams import HParam

    before = draw_hparams("irm", 3)
    cls = ALGORITHMS.get("irm")
    monkeypatch.setattr(cls, "HPARAMS", {"aaa": HParam(1.0, "test", search=("uniform", 0, 1)),
                                         **cls.HPARAMS})
    after = draw_hparams("irm", 3)
    assert set(after) == set(before) | {"aaa"}
    assert {k: after[k] for k in before} == before


def test_set_fixes_a_value_in_every_draw_and_scopes_to_one_algorithm(tmp_path):
    fixed = scope_hparams({"lr": 0.002, "irm.irm_lambda": 5}, ("erm", "irm"))
    assert fixed == {"erm": {"lr": 0.002}, "irm": {"lr": 0.002, "irm_lambda": 5}}
    runs = expand(spec(n_hparams=3, seeds=(0,), test_domains=("A",), fixed=fixed), tmp_path)
    assert {r.hparams["lr"] for r in runs} == {0.002}
    assert {r.hparams["irm_lambda"] for r in runs if r.point.algorithm == "irm"} == {5.0}
    assert len({r.hparams["weight_decay"] for r in runs}) == 3 + 2  # drawn: distinct per draw
    with pytest.raises(ConfigError, match="--set irm_lambda: erm has no hyperparameter irm_lambda"):
        scope_hparams({"irm_lambda": 5}, ("erm", "irm"))
    with pytest.raises(ConfigError, match="'align' is not an algorithm of this sweep"):
        scope_hparams({"align.fill": "blur"}, ("erm",))
    with pytest.raises(ConfigError, match="'lr' must be > 0, got -1"):
        scope_hparams({"lr": -1}, ("erm",))
    with pytest.raises(ConfigError, match="'weight_decay' expects float, got 'lots'"):
        scope_hparams({"weight_decay": "lots"}, ("erm",))


def test_the_name_hash_follows_the_results_not_the_machine(tmp_path):
    (run,) = expand(spec(algorithms=("erm",), seeds=(0,), test_domains=("A",)), tmp_path)
    resolved = {**run.config.to_dict(), "hparams": run.hparams}
    assert run.point.hash == config_hash(resolved) and len(run.point.hash) == 8
    same = {**resolved, "device": "cuda", "num_workers": 8, "out": "elsewhere"}
    assert config_hash(same) == run.point.hash
    for key, value in (("steps", 5), ("image_size", 48), ("hparams", {**run.hparams, "lr": 1.0})):
        assert config_hash({**resolved, key: value}) != run.point.hash, key


def test_every_run_is_checked_before_anything_is_written(tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError, match="'align' trains on its whole objective only from step "
                                          "3000"):
        expand(spec(algorithms=("erm", "align")), out)
    with pytest.raises(ConfigError, match="algorithm 'gradia' needs masks"):
        expand(spec(algorithms=("gradia",)), out)
    with pytest.raises(ConfigError, match="'image_size' must be an integer"):
        expand(spec(settings={**TINY, "data": "x", "image_size": "big"}), out)
    with pytest.raises(ConfigError, match="'seed' is set per run by the sweep; use seeds"):
        expand(spec(settings={**TINY, "data": "x", "seed": 3}), out)
    assert not out.exists()


def test_sweep_file_keys_and_types_are_checked(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("steps: 4\nsweep:\n  algorithms: [erm]\n  seeds: [0, 1]\n")
    assert read_sweep_file(f) == ({"steps": 4}, {"algorithms": ["erm"], "seeds": [0, 1]})
    for body, match in (("sweep:\n  algorithm: [erm]\n", "unknown sweep key 'algorithm'"),
                        ("sweep:\n  seeds: 3\n", "sweep seeds must be a list of integer"),
                        ("sweep:\n  n_hparams: 0\n", "n_hparams must be an integer >= 1"),
                        ("learning_rate: 1\n", "unknown key\\(s\\) learning_rate")):
        f.write_text(body)
        with pytest.raises(ConfigError, match=match):
            read_sweep_file(f)


def test_sweep_spec_merges_file_and_flags_and_checks_the_folder(tmp_path):
    data = fake_domainbed(tmp_path / "data", n=1)
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps({**TINY, "hparams": {"align.warmup_steps": 1},
                             "sweep": {"algorithms": ["erm", "align"], "seeds": [0],
                                       "set": {"lr": 0.01}, "n_hparams": 2}}))
    got = sweep_spec(SweepInputs(out=tmp_path / "o", data=data, config=f, steps=6,
                                 set=("align.masker_warmup_steps=2",)))
    assert got.domains == ("A", "B", "C") and got.settings["steps"] == 6
    assert got.base == {"erm": {}, "align": {"warmup_steps": 1}}
    assert got.fixed == {"erm": {"lr": 0.01}, "align": {"lr": 0.01, "masker_warmup_steps": 2}}
    assert got.n_hparams == 2 and got.seeds == (0,) and got.protocols == ("lodo",)
    assert sweep_spec(SweepInputs(out=tmp_path / "o", data=data, config=f,
                                  algorithms=("erm",))).algorithms == ("erm",)  # flags win
    with pytest.raises(ConfigError, match="no folder for domain\\(s\\) Caltech101, LabelMe"):
        sweep_spec(SweepInputs(out=tmp_path / "o", data=data, dataset="vlcs", config=f))
    with pytest.raises(ConfigError, match="no such folder"):
        sweep_spec(SweepInputs(out=tmp_path / "o", data=tmp_path / "nope", config=f))


def test_the_manifest_is_the_union_of_the_grids_launched_into_a_folder(tmp_path):
    a = spec(algorithms=("erm",), seeds=(0,), test_domains=("A",))
    b = spec(algorithms=("erm",), seeds=(0, 1), test_domains=("A",))
    write_manifest(tmp_path, a, expand(a, tmp_path))
    write_manifest(tmp_path, b, expand(b, tmp_path))
    write_manifest(tmp_path, b, expand(b, tmp_path))  # again: nothing new
    manifest = read_manifest(tmp_path)
    assert [r["seed"] for r in manifest["runs"]] == [0, 1] and len(manifest["grids"]) == 2
    entry = manifest["runs"][0]
    assert entry["dir"] == default_name(expand(a, tmp_path)[0].point)
    assert (entry["algorithm"], entry["protocol"], entry["cell"], entry["test_domains"],
            entry["hparams_draw"]) == ("erm", "lodo", "lodo-A", ["A"], 0)
    assert entry["hparams"]["lr"] == 5e-05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"]  # no lock file left


def _cli(*args: str):
    return CliRunner().invoke(app, expand_multi(list(args)))


def test_dry_run_prints_one_line_per_run_and_writes_nothing(tmp_path):
    data = fake_domainbed(tmp_path / "data", n=1)
    f = tmp_path / "tiny.yaml"
    f.write_text(json.dumps(TINY))
    out = tmp_path / "sweep"
    result = _cli("sweep", "--out", str(out), "--data", str(data), "--config", str(f),
                  "--algorithms", "erm", "irm", "--protocols", "lodo", "in_distribution",
                  "--seeds", "0", "--n-hparams", "2", "--set", "irm.irm_lambda=5", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len([x for x in lines if x.startswith("new ")]) == 2 * 4 * 2
    assert lines[0].startswith("new    runs/erm/lodo-A/h0/s0-")
    assert any(x.startswith("new    runs/irm/in_distribution/h0/s0-") and "irm_lambda=5" in x
               for x in lines)
    assert lines[-1].startswith("16 runs = 2 algorithm(s) x 4 cell(s) x 2 draw(s) x 1 seed(s)")
    assert not out.exists()
    # a synthetic sweep's dry run does not make its data either
    result = _cli("sweep", "--out", str(out), "--synthetic", "square-pretrained", "--algorithms",
                  "erm", "--seeds", "0", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "4 runs = 1 algorithm(s) x 4 cell(s)" in result.output and not out.exists()


def test_cli_errors_are_one_paragraph(tmp_path):
    data = fake_domainbed(tmp_path / "data", n=1)
    for args, match in (
            (["--algorithms", "erm", "--set", "lr=-1"], "hyperparameter 'lr' must be > 0"),
            (["--algorithms", "nope"], "'nope' is not one of"),
            (["--algorithms", "erm", "--launcher", "pool", "--partition", "gpu"],
             "--partition is an option of --launcher slurm, not of pool"),
            (["--algorithms", "erm", "--synthetic", "square-scratch"], "--data and --synthetic")):
        result = _cli("sweep", "--out", str(tmp_path / "o"), "--data", str(data), *args)
        assert result.exit_code == 2 and match in result.output, (args, result.output)
        assert not (tmp_path / "o").exists()
    # a synthetic sweep's runs are checked before its data are made
    result = _cli("sweep", "--out", str(tmp_path / "o"), "--synthetic", "square-scratch",
                  "--algorithms", "align", "--steps", "10", "--set", "align.warmup_steps=20")
    assert result.exit_code == 2 and "only from step 21" in result.output
    assert not (tmp_path / "o").exists()


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: Runs of each shipped sweep: 8 algorithms x cells x 1 draw x 3 seeds (4 domains in both).
SHIPPED = {"vlcs_in_distribution.yaml": 8 * 1 * 3, "vlcs_single_source.yaml": 8 * 4 * 3,
           "terra_incognita_in_distribution.yaml": 8 * 1 * 3,
           "terra_incognita_single_source.yaml": 8 * 4 * 3}


def test_every_shipped_sweep_config_is_known_to_this_test():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sweep_configs_expand_to_the_papers_grid(name, tmp_path):
    """Every shipped config passes the sweep's checks (a dry run over a folder with the preset's
    domains) and trains with DRE's preset: ResNet-50 from ImageNet at 224 px."""
    from align.data.presets import get_preset

    dataset = name.rsplit("_", 2)[0]
    data = tmp_path / "data"
    for domain in get_preset(dataset).domains:
        (data / domain).mkdir(parents=True)
    args = ["--data", str(data), "--masks", str(tmp_path / "masks"), "--config",
            str(CONFIGS / name)]
    result = _cli("sweep", "--out", str(tmp_path / "out"), *args, "--dry-run")
    assert result.exit_code == 0, result.output
    n = SHIPPED[name]
    assert result.output.splitlines()[-1].startswith(f"{n} runs = 8 algorithm(s) x ")
    assert not (tmp_path / "out").exists()
    got = sweep_spec(SweepInputs(out=tmp_path / "out", data=data, masks=tmp_path / "masks",
                                 config=CONFIGS / name), make=False)
    runs = expand(got, tmp_path / "out")
    assert len(runs) == n and {r.point.seed for r in runs} == {0, 1, 2}
    assert {(r.config.backbone, r.config.pretrained, r.config.image_size, r.config.batch_size,
             r.config.steps, r.config.dataset, r.config.selection) for r in runs} == {
        ("resnet50", "imagenet", 224, 16, 5000, dataset, "val_loss")}
    assert {r.point.algorithm for r in runs} >= {"erm", "sgt", "dre", "align", "gradia", "res_g"}
    # without masks, the mask-supervised baselines are refused before anything is written
    result = _cli("sweep", "--out", str(tmp_path / "out"), "--data", str(data), "--config",
                  str(CONFIGS / name), "--dry-run")
    assert result.exit_code == 2 and "needs masks" in result.output


def test_the_docs_example_sweep_file_expands(tmp_path):
    """docs/sweeps.md's sweep file is a valid one: 3 algorithms x 4 held-out domains x 8 draws
    x 3 seeds, with the file's hparams and set."""
    import re

    from align.data.presets import get_preset

    doc = (CONFIGS.parent / "docs" / "sweeps.md").read_text()
    (body,) = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    f = tmp_path / "sweep.yaml"
    f.write_text(body)
    data = tmp_path / "VLCS"
    for domain in get_preset("vlcs").domains:
        (data / domain).mkdir(parents=True)
    runs = expand(sweep_spec(SweepInputs(out=tmp_path / "out", data=data, config=f), make=False),
                  tmp_path / "out")
    assert len(runs) == 3 * 4 * 8 * 3
    assert {r.hparams["weight_decay"] for r in runs} == {0.0}
    assert {r.hparams["warmup_steps"] for r in runs if r.point.algorithm == "align"} == {2000}
    assert len({r.hparams["lr"] for r in runs if r.point.algorithm == "dre"}) == 8
