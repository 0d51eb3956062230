"""The benchmark scripts still run and still compare like with like.

Not timings (speed is never asserted in a test): each script is run at a tiny size and its own
agreement checks are read back, so a change that breaks a script, or makes two candidates compute
different things, fails here rather than on the day someone wants a figure.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _value(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in output:\n{text}"
    return float(match.group(1))


@pytest.mark.slow
def test_bench_gradcam_candidates_agree() -> None:
    out = _run("bench_gradcam.py", "--model", "smallcnn", "--size", "32", "--batch", "4",
               "--rounds", "1", "--warmup", "0")
    # Same maps from the batched call, the textbook per-image loop and Captum.
    assert _value(r"max \|textbook - ours\| = ([0-9.e+-]+)", out) < 1e-5
    assert _value(r"max \|ours - captum\| = ([0-9.e+-]+)", out) < 1e-5
    assert _value(r"per-sample loop / batched = ([0-9.]+)x", out) > 0


@pytest.mark.slow
def test_bench_steps_and_metrics_run() -> None:
    steps = _run("bench_steps.py", "--backbone", "smallcnn", "--size", "32", "--batch", "4",
                 "--rounds", "1")
    for name in ("dre", "align"):
        assert _value(rf"{name} .*?([0-9.]+)x ERM", steps) > 0
    assert "['masker', 'classifier']" in steps  # one ALIGN iteration updates both networks
    metrics = _run("bench_metrics.py", "--batch", "2", "--size", "16", "--repeats", "1")
    assert _value(r"max \|loop - batched\|:\s+([0-9.e+-]+)", metrics) < 1e-4
