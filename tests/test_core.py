"""Registry, hyperparameters, config files, protocols, model selection, atomic io."""

import json
import os
import re
import stat

import pytest
import torch

from align import io
from align.config import make_config, read_config_file
from align.hparams import HParam, resolve, sample
from align.registry import Registry
from align.seeding import seed_hash
from align.protocols import make_protocol
from align.training.selection import SELECTION_METHODS, summarize


def test_registry_refuses_duplicates_and_names_choices():
    reg = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)
    with pytest.raises(KeyError, match="choose one of: a"):
        reg.get("b")


def test_hparams_unknown_key_and_types():
    spec = {"lr": HParam(0.1, "x"), "n": HParam(3, "x"), "flag": HParam(True, "x")}
    assert resolve(spec, {"lr": 1}, "algo") == {"lr": 1.0, "n": 3, "flag": True}
    with pytest.raises(ValueError, match="unknown hyperparameter.*bogus"):
        resolve(spec, {"bogus": 1}, "algo")
    with pytest.raises(ValueError, match="'n' expects int"):
        resolve(spec, {"n": "three"}, "algo")


def test_hparam_sampling_is_seeded_per_name():
    spec = {"a": HParam(1.0, "x", search=("log", 1e-3, 1.0)), "b": HParam(2.0, "x", search=("uniform", 0, 1))}
    assert sample(spec, 0, "o") == {"a": 1.0, "b": 2.0}  # seed 0: defaults
    s1 = sample(spec, 5, "o")
    # Adding a hyperparameter does not shift the others' draws.
    s2 = sample({**spec, "c": HParam(0.0, "x", search=("uniform", 0, 1))}, 5, "o")
    assert s1["a"] == s2["a"] and s1["b"] == s2["b"]
    assert seed_hash(1, "x") == seed_hash(1, "x") != seed_hash(2, "x")


def test_seed_hash_known_answers():
    """Pinned: data splits, data order and sweep draws all depend on these values, so a change of
    the hash would silently change every run's split."""
    assert seed_hash(0, "A") == 1560136875
    assert seed_hash(1, "x") == 844883294
    assert seed_hash(3, "A", "val") == 43762058
    from align import hparams

    assert hparams.seed_hash is seed_hash  # still importable from hparams


def test_hparam_sample_known_answer_per_algorithm_draw_and_name():
    """A sweep draw is a function of (draw seed, algorithm, hyperparameter name) alone."""
    from align.algorithms import ALGORITHMS

    spec = ALGORITHMS.get("irm").hparam_spec()
    got = sample(spec, 1, "irm")
    assert got["lr"] == pytest.approx(2.7077422664548503e-04, rel=1e-12)  # log [1e-5, 1e-3]
    assert got["weight_decay"] == pytest.approx(4.8724143545818866e-06, rel=1e-12)
    assert got["irm_lambda"] == pytest.approx(9107.39601626599, rel=1e-12)
    assert got["irm_penalty_anneal_iters"] == 10 and got["dropout"] == 0.0  # no search: default
    assert sample(spec, 1, "erm")["lr"] != got["lr"]  # another algorithm, another draw
    assert sample({"lr": spec["lr"]}, 1, "irm") == {"lr": got["lr"]}  # the others do not matter
    assert sample(spec, 0, "irm") == {k: h.default for k, h in spec.items()}


@pytest.mark.parametrize("draw", [1, 2, 3])
def test_every_algorithms_sweep_draws_are_valid_hyperparameters(draw):
    from align.algorithms import ALGORITHMS

    for name in ALGORITHMS:
        cls = ALGORITHMS.get(name)
        drawn = sample(cls.hparam_spec(), draw, name)
        assert cls.resolve_hparams(drawn) == drawn, name


def test_hparam_choices_are_checked_naming_key_and_value():
    spec = {"mode": HParam("a", "x", choices=("a", "b")), "n": HParam(1, "x")}
    assert resolve(spec, {"mode": "b"}, "algo")["mode"] == "b"
    with pytest.raises(ValueError, match="algo: hyperparameter mode 'c' is not one of: a, b"):
        resolve(spec, {"mode": "c"}, "algo")
    # A declaration that contradicts itself fails when it is written, not in a sweep.
    with pytest.raises(ValueError, match="not among choices"):
        HParam("z", "x", choices=("a", "b"))
    with pytest.raises(ValueError, match="search kind 'grid'"):
        HParam(1.0, "x", search=("grid", [1.0]))


def test_hparam_bounds_known_answers_and_declarations():
    """Bounds in interval notation: open and closed ends, the messages users see, and
    declarations whose default or sweep range leave their bounds fail when written."""
    spec = {"a": HParam(0.2, "x", bounds="(0, inf)"), "k": HParam(1, "x", bounds="[1, inf)"),
            "f": HParam(0.1, "x", bounds="(0, 1)"), "d": HParam(0.0, "x", bounds="[0, 1)")}
    ok = resolve(spec, {"a": 1e-9, "k": 1, "f": 0.999, "d": 0.0}, "algo")
    assert ok == {"a": 1e-9, "k": 1, "f": 0.999, "d": 0.0}
    for key, value, message in (("a", 0.0, "'a' must be > 0, got 0.0"),
                                ("k", 0, "'k' must be >= 1, got 0"),
                                ("f", 1.0, r"'f' must lie in \(0, 1\), got 1.0"),
                                ("f", 0, r"'f' must lie in \(0, 1\), got 0"),
                                ("d", 1.0, r"'d' must lie in \[0, 1\), got 1.0"),
                                ("d", -0.5, r"'d' must lie in \[0, 1\), got -0.5")):
        with pytest.raises(ValueError, match=f"algo: hyperparameter {message}"):
            resolve(spec, {key: value}, "algo")
    with pytest.raises(ValueError, match=r"outside bounds \(0, inf\)"):
        HParam(0.0, "x", bounds="(0, inf)")
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\] outside bounds"):
        HParam(0.5, "x", search=("uniform", 0.0, 1.0), bounds="(0, 1)")
    with pytest.raises(ValueError, match="not an interval"):
        HParam(0.5, "x", bounds="0..1")


@pytest.mark.parametrize("algorithm, key, value", [
    ("align", "masker_every", 0),  # ZeroDivisionError at the first step after the warm-ups
    ("align", "bce_eps", 0.0),
    ("align", "masker_lr", 0.0),
    ("dre", "mix_alpha", 0.0),  # Beta(0, 0) raised at step 0, after the run's files were written
    ("mixup", "mixup_alpha", 0.0),
    ("sgt", "mask_fraction", 1.0),  # was checked only when the network was built (not by sweeps)
    ("erm", "dropout", 1.0),
])
def test_hyperparameters_that_would_fail_in_training_are_refused_by_their_class(
        algorithm, key, value):
    from align.algorithms import ALGORITHMS
    with pytest.raises(ValueError, match=f"algorithm '{algorithm}': hyperparameter '{key}' must"):
        ALGORITHMS.get(algorithm).resolve_hparams({key: value})


def test_every_declared_choice_is_enforced():
    """Every algorithm's hyperparameters with choices refuse another value, before any network
    is built (ALIGN's `fill` used to be checked by filling a dummy tensor)."""
    from align.algorithms import ALGORITHMS

    checked = 0
    for name in ALGORITHMS:
        cls = ALGORITHMS.get(name)
        for key, h in cls.hparam_spec().items():
            if h.choices is not None:
                with pytest.raises(ValueError, match=f"{key} 'bogus' is not one of"):
                    cls.resolve_hparams({key: "bogus"})
                checked += 1
    assert checked >= 8  # dre's four (also align's), align's three, sgt's fill


def test_registry_sets_names_and_unknown_names_read_plainly():
    class Thing:
        pass

    reg = Registry("thing", sets_name=True)
    reg.register("t")(Thing)
    assert Thing.name == "t"
    with pytest.raises(KeyError) as err:
        reg.get("u")
    assert str(err.value) == "unknown thing 'u'; choose one of: t"  # not a quoted repr
    from align.errors import UserError

    assert isinstance(err.value, UserError)


def test_config_file_unknown_key_is_an_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 10\nbogus_key: 3\n")
    with pytest.raises(ValueError, match=r"c.yaml: unknown key\(s\) bogus_key"):
        read_config_file(f)


def test_config_file_and_set_read_exponents_without_a_dot_as_numbers(tmp_path):
    """`lr: 1e-5` is a number, as in JSON (PyYAML alone reads YAML 1.1's string '1e-5' and the
    run was refused with "expects float, got '1e-5'"); so is `--set lr=1e-5`."""
    from align.experiments.sweep_grid import parse_assignments

    f = tmp_path / "c.yaml"
    f.write_text("holdout_fraction: 2e-1\nhparams: {lr: 1e-5, weight_decay: 1.0e3}\n")
    cfg = make_config(f, data="d", out="o", test_domains=["A"])
    assert cfg.holdout_fraction == 0.2 and cfg.hparams == {"lr": 1e-5, "weight_decay": 1e3}
    assert parse_assignments(["lr=1e-5", "erm.dropout=5E-1", "fill=blur"]) == {
        "lr": 1e-5, "erm.dropout": 0.5, "fill": "blur"}


def test_config_merges_file_and_flags(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"steps": 10, "backbone": "smallcnn", "hparams": {"lr": 0.1}}))
    cfg = make_config(f, data="d", out="o", test_domains=["A"], steps=20)
    assert cfg.steps == 20 and cfg.backbone == "smallcnn" and cfg.hparams == {"lr": 0.1}
    with pytest.raises(ValueError, match="needs 'test_domains'"):
        make_config(data="d", out="o")
    with pytest.raises(ValueError, match="protocol 'x'"):
        make_config(data="d", out="o", protocol="x")


def test_protocols():
    doms = ["A", "B", "C"]
    p = make_protocol("lodo", doms, ["B"], [])
    assert p.train_domains == ("A", "C") and p.val_keys() == ["A_out", "C_out"] and p.test_keys() == ["B_in"]
    p = make_protocol("single_source", doms, [], ["A"])
    assert p.train_domains == ("A",) and p.test_keys() == ["B_in", "C_in"]
    p = make_protocol("in_distribution", doms, [], [])
    assert p.train_split == "train" and p.val_keys() == ["A_val", "B_val", "C_val"]
    assert p.test_keys() == ["A_out", "B_out", "C_out"]
    with pytest.raises(ValueError, match="unknown domain.*Z.*the data has: A, B, C"):
        make_protocol("lodo", doms, ["Z"], [])


def test_a_domain_named_twice_is_refused_before_anything_is_written():
    """`--test-domains B B` trained B once but recorded [B, B] in config.json, so the same
    run named with `--test-domains B` was refused as "another configuration"."""
    with pytest.raises(ValueError, match=re.escape(
            "'test_domains' (--test-domains) names B twice: ['B', 'B']")):
        make_config(data="d", out="o", test_domains=["B", "B"])


def test_protocols_are_registered_with_their_splits_and_roles():
    from align.protocols import PROTOCOLS

    assert PROTOCOLS.names() == ["lodo", "single_source", "in_distribution"]
    lodo, ind = PROTOCOLS.get("lodo"), PROTOCOLS.get("in_distribution")
    assert lodo.roles(["B_in"], ["A_out"]) == [("B_in", "ood"), ("A_out", "in_domain")]
    assert ind.roles(["A_out"], ["A_val"]) == [("A_out", "in_domain")]
    assert ind.carves_val and not lodo.carves_val
    # A domain list the protocol would ignore is refused (it used to be dropped silently).
    with pytest.raises(ValueError, match="protocol 'lodo' takes no 'train_domains'"):
        make_protocol("lodo", ["A", "B"], ["B"], ["A"])
    with pytest.raises(ValueError, match="single_source' needs exactly 1 'train_domains'"):
        make_protocol("single_source", ["A", "B"], [], ["A", "B"])
    with pytest.raises(ValueError, match="in_distribution' takes no 'test_domains'"):
        make_config(data="d", out="o", protocol="in_distribution", test_domains=["A"])
    with pytest.raises(KeyError, match="unknown protocol 'x'"):
        make_protocol("x", ["A"], [], [])


def test_selection_picks_best_validation_and_last():
    recs = [
        {"step": 1, "acc": {"A_out": 0.5, "B_in": 0.9}},
        {"step": 2, "acc": {"A_out": 0.8, "B_in": 0.4}},
        {"step": 3, "acc": {"A_out": 0.8, "B_in": 0.7}},  # tie: the earlier step wins
    ]
    assert SELECTION_METHODS.get("training_domain_validation").select(recs, ["A_out"])["step"] == 2
    s = summarize(recs, {"val_keys": ["A_out"], "test_keys": ["B_in"]})
    assert s["training_domain_validation"]["test_acc"] == 0.4
    assert s["last"]["step"] == 3 and s["last"]["test_acc"] == 0.7


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    io.write_json(target, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        io.write_json(target, {"a": Boom()})
    assert json.loads(target.read_text()) == {"a": 1}  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    expected = stat.S_IMODE(plain.stat().st_mode)  # e.g. 0o644 under umask 022
    if expected == 0o600:
        pytest.skip("umask 077: a private temp file would look the same")
    io.write_text(tmp_path / "a.txt", "x")
    io.save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(1)})
    for name in ("a.txt", "c.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_install_dir_replaces_whole_or_restores_the_old(tmp_path, monkeypatch):
    def filled(text: str):
        d = io.temp_dir_beside(tmp_path / "out")
        (d / "f.txt").write_text(text)
        return d

    io.install_dir(filled("one"), tmp_path / "out")  # no target yet
    assert (tmp_path / "out" / "f.txt").read_text() == "one"
    io.install_dir(filled("two"), tmp_path / "out")  # replaces a non-empty target
    assert (tmp_path / "out" / "f.txt").read_text() == "two"

    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the new folder's rename onto the target fails
            raise OSError("simulated")
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", flaky)
    new = filled("three")
    with pytest.raises(OSError, match="simulated"):
        io.install_dir(new, tmp_path / "out")
    assert (tmp_path / "out" / "f.txt").read_text() == "two"  # the old folder is back
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", new.name])  # no .old left
