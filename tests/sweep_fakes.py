"""Sweep folders written by hand for `align collect`'s tests: run directories with the files the
collector and the report read (config.json, protocol.json, results.jsonl, summary.json, done)
and accuracies chosen by the test, so that every selection has a known answer.

`record(step, val=, test_in=, test_out=, ce=)` gives one evaluation record of a run: every
training domain's validation split scores `val` (with mean cross-entropy `ce`), every test
domain's test split `test_in` and its validation split `test_out`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from align.training.selection import summarize

DOMAINS = ("A", "B", "C")
#: The split keys of each protocol: (training domains' validation split, test split, test
#: domains' validation split), as `align.protocols` names them.
SPLITS = {"lodo": ("out", "in", "out"), "single_source": ("out", "in", "out"),
          "in_distribution": ("val", "out", "val")}


def protocol_json(protocol: str, env: tuple[str, ...], domains=DOMAINS) -> dict:
    """protocol.json of a run holding out `env` (lodo), trained on `env` (single_source) or on
    every domain (in_distribution, `env` empty)."""
    val, test, _ = SPLITS[protocol]
    if protocol == "lodo":
        train, tests = [d for d in domains if d not in env], list(env)
    elif protocol == "single_source":
        train, tests = list(env), [d for d in domains if d not in env]
    else:
        train, tests = list(domains), list(domains)
    return {"name": protocol, "train_domains": train, "test_domains": tests,
            "train_split": "train" if protocol == "in_distribution" else "in",
            "val_keys": [f"{d}_{val}" for d in train], "test_keys": [f"{d}_{test}" for d in tests]}


def record(protocol: dict, step: int, val: float, test_in: float | dict, test_out: float,
           ce: float | None = 1.0) -> dict:
    """One evaluation record (module docstring); `test_in` may give each test domain's value;
    `ce=None` leaves the cross-entropies out (a record from before they were logged)."""
    _, test, test_val = SPLITS[protocol["name"]]
    acc = {k: val for k in protocol["val_keys"]}
    for d in protocol["test_domains"]:
        acc[f"{d}_{test}"] = test_in[d] if isinstance(test_in, dict) else test_in
        acc.setdefault(f"{d}_{test_val}", test_out)
    out = {"step": step, "losses": {"loss": 1.0, "ce": 1.0}, "acc": acc, "eval": {}}
    if ce is not None:
        out["ce"] = {k: ce for k in protocol["val_keys"]}
        out["n"] = {k: 10 for k in protocol["val_keys"]}
    return out


def write_run(path: Path, algorithm: str, protocol: dict, records: list[dict], *, seed: int,
              hparams: dict, finished: bool = True, steps: int = 4, dataset: str = "toy") -> Path:
    """A run directory with `records` as its results.jsonl (finished: summary.json and done)."""
    path.mkdir(parents=True)
    config = {"data": f"/data/{dataset}", "out": str(path), "dataset": None,
              "algorithm": algorithm, "protocol": protocol["name"],
              "test_domains": protocol["test_domains"] if protocol["name"] == "lodo" else [],
              "train_domains": (protocol["train_domains"] if protocol["name"] == "single_source"
                                else []),
              "steps": steps, "seed": seed, "backbone": "smallcnn", "image_size": 32,
              "selection": "training_domain_validation", "hparams": hparams}
    (path / "config.json").write_text(json.dumps(config))
    (path / "protocol.json").write_text(json.dumps(protocol))
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if finished:
        summary = {"steps": steps, **summarize(records, protocol)}
        (path / "summary.json").write_text(json.dumps(summary))
        (path / "done").write_text("done\n")
    else:
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "last.pt").write_bytes(b"")  # training would resume from it
    return path


#: The draws of the golden sweep, per algorithm.
DRAWS = {"erm": [{"lr": 0.001, "weight_decay": 0.0}, {"lr": 0.0001, "weight_decay": 0.0}],
         "align": [{"lr": 0.001, "mask_weight": 1.0}, {"lr": 0.0005, "mask_weight": 0.25}]}


def _random_records(protocol: dict, name: str) -> list[dict]:
    """Two records of made-up accuracies, the same on every machine (a seeded `random`)."""
    rng = random.Random(name)

    def draw() -> float:
        return round(rng.uniform(0.4, 0.95), 3)

    return [record(protocol, step, draw(), {d: draw() for d in protocol["test_domains"]},
                   draw(), ce=round(rng.uniform(0.2, 1.5), 3)) for step in (2, 4)]


def golden_sweep(root: Path) -> Path:
    """The golden sweep: every protocol's table shape, and a partial corner.

    - lodo: erm and align x held-out A and B x seeds 0 and 1 x their two draws; align's second
      draw for (B, seed 1) is not finished;
    - single_source: erm x sources A and B x seeds 0 and 1 x two draws;
    - in_distribution: erm and align x seeds 0 and 1, one draw each.
    """
    for algo, draws in DRAWS.items():
        for env in ("A", "B"):
            for seed in (0, 1):
                for i, hp in enumerate(draws):
                    p = protocol_json("lodo", (env,))
                    name = f"lodo/{algo}/test-{env}/seed{seed}/draw{i}"
                    write_run(root / name, algo, p, _random_records(p, name), seed=seed,
                              hparams=hp, finished=(algo, env, seed, i) != ("align", "B", 1, 1))
                    if algo == "erm":
                        p = protocol_json("single_source", (env,))
                        name = f"single/{algo}/source-{env}/seed{seed}/draw{i}"
                        write_run(root / name, algo, p, _random_records(p, name), seed=seed,
                                  hparams=hp)
        for seed in (0, 1):
            p = protocol_json("in_distribution", ())
            name = f"in_dist/{algo}/seed{seed}"
            write_run(root / name, algo, p, _random_records(p, name), seed=seed,
                      hparams=draws[0])
    return root
