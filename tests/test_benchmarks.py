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


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_as_a_smoke_test() -> None:
    """benchmarks/gpu_check.sh --device cpu: every step of the GPU check at tiny sizes (the gpu
    tests collected and skipped), each printing the figures docs/benchmarks.md records."""
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "skipped" in out and "failed" not in out  # the gpu tests, collected
    rows = {}
    for label in ("erm fp32", "dre fp32", "align fp32", "align bf16", "align bf16 cl"):
        row = re.search(rf"^  {label} +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+) +(\S+)$",
                        out, re.M)
        assert row is not None, f"{label!r} not in:\n{out}"
        rows[label] = [float(v) for v in row.groups()]
        assert rows[label][1] > 0  # images/s
    assert rows["erm fp32"][2] == 1.0  # the baseline of "x ERM"
    assert _value(r"loader / step = ([0-9.]+)x", out) > 0
    assert _value(r"max \|textbook - ours\| = ([0-9.e+-]+)", out) < 1e-5
    # the shipped sweep's estimate on a stand-in folder: VLCS's image count, every algorithm
    assert "== configs/vlcs_in_distribution.yaml (vlcs, 10729 images)" in out
    assert re.search(r"^  align +3 runs .*masker\+classifier with Grad-CAM, guided", out, re.M)
    assert _value(r"total: 24 runs, ([0-9.]+) device-hours", out) > 0


@pytest.mark.slow
def test_bench_throughput_reports_memory_and_ratios() -> None:
    out = _run("bench_throughput.py", "--backbones", "smallcnn", "--sizes", "32", "--batch", "6",
               "--precisions", "fp32", "--rounds", "1", "--warmup", "0")
    rows = re.findall(r"^  (erm|dre|align) fp32 +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+) "
                      r"+([0-9.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["erm", "dre", "align"], out
    for name, ms, per_s, cost, speedup, peak in rows:
        assert float(per_s) == pytest.approx(6000 / float(ms), rel=0.01)  # images/s = batch / time
        assert float(speedup) == 1.0  # fp32 against itself
        assert float(peak) >= 0
    assert float(rows[0][3]) == 1.0  # ERM fp32 is the baseline
