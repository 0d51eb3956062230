"""Regenerate `tests/golden/runs/` (see README.md): train and evaluate the four tiny runs.

    python tests/golden/make_golden.py
    UPDATE_GOLDEN=1 python -m pytest -q tests/test_evaluate_report.py -k golden

Then review the diff of `runs/` and `report/` before committing.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the tests' conftest: the tiny benchmark and config

from conftest import TINY, tiny_config  # noqa: E402

from align.data.synthetic import generate  # noqa: E402
from align.evaluate import evaluate_run  # noqa: E402
from align.training.loop import Trainer  # noqa: E402

HPARAMS = {"erm": {"lr": 1e-3}, "align": {"lr": 1e-3, "warmup_steps": 3, "masker_warmup_steps": 2}}
#: What the report reads; checkpoints, splits and images stay out (the report needs none).
KEEP = ("config.json", "protocol.json", "summary.json", "results.jsonl", "evaluation.json",
        "examples.npz")


def _relative(path: Path, tmp: Path, keys: tuple[str, ...], where=lambda d: d) -> None:
    """Rewrite the absolute paths under `keys` as paths relative to the temporary folder."""
    record = json.loads(path.read_text())
    for k in keys:
        if where(record).get(k) is not None:
            where(record)[k] = str(Path(where(record)[k]).relative_to(tmp))
    path.write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name).resolve()
        data = generate(tmp / "data", TINY, seed=0)
        for algo, hp in HPARAMS.items():
            for seed in (0, 1):
                run = tmp / "runs" / algo / f"seed{seed}"
                Trainer(tiny_config(data, run, algorithm=algo, hparams=hp, seed=seed)).run()
                evaluate_run(run)
                dest = HERE / "runs" / algo / f"seed{seed}"
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                for f in KEEP:
                    shutil.copy(run / f, dest / f)
                _relative(dest / "config.json", tmp, ("data", "masks", "out"))
                _relative(dest / "evaluation.json", tmp, ("data", "masks"), lambda d: d["config"])


if __name__ == "__main__":
    main()
