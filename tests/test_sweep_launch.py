"""`align sweep`'s launchers: the same tiny grid through `local`, `pool` and submitit's local
executor gives identical results; an interrupted sweep relaunched equals an uninterrupted one;
a run another process trains is skipped; launchers started together share their setup; the
Slurm job array carries every option."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from align.cli import app, expand_multi
from align.experiments.sweep_launch import available_cpus
from align.rundir import RunFiles
from test_sweep_grid import TINY, fake_domainbed

#: Timing fields of results.jsonl, which differ between any two executions.
TIMING = {"seconds", "images_per_s", "peak_memory_mib"}  # measurements, not results
#: What a pool of 2 gives each worker on this machine; the other launchers get the same, so
#: that every launcher computes with the same number of threads.
THREADS = max(1, available_cpus() // 2)


def make_grid(root: Path, steps: int = 4, eval_every: int = 2) -> list[str]:
    """The tiny grid (2 algorithms x 2 held-out domains x 1 seed) as `align sweep` arguments."""
    data = fake_domainbed(root / "data")
    sweep_file = root / "grid.yaml"
    sweep_file.write_text(json.dumps({
        **TINY, "steps": steps, "eval_every": eval_every,
        "hparams": {"align.warmup_steps": 2, "align.masker_warmup_steps": 1},
        "sweep": {"algorithms": ["erm", "align"], "test_domains": ["A", "B"], "seeds": [0]}}))
    return ["--data", str(data), "--config", str(sweep_file)]


def sweep(out: Path, grid: list[str], *args: str) -> str:
    result = CliRunner().invoke(app, expand_multi(["sweep", "--out", str(out), *grid, *args]))
    assert result.exit_code == 0, result.output
    return result.output


def results(out: Path) -> dict[str, tuple[list[dict], dict]]:
    """{run directory: (its results.jsonl without timings, its summary.json)}."""
    got = {}
    for entry in json.loads((out / "sweep.json").read_text())["runs"]:
        run = RunFiles(out / entry["dir"])
        records = [{k: v for k, v in r.items() if k not in TIMING} for r in run.records()]
        got[entry["dir"]] = (records, run.summary())
    return got


@pytest.fixture
def threads():
    torch.set_num_threads(THREADS)
    yield THREADS


@pytest.mark.slow
def test_local_pool_and_submitit_give_identical_results(tmp_path, threads):
    grid = make_grid(tmp_path)
    sweep(tmp_path / "local", grid)
    reference = results(tmp_path / "local")
    assert len(reference) == 4 and all(len(r) == 2 for r, _ in reference.values())
    output = sweep(tmp_path / "pool", grid, "--launcher", "pool", "--workers", "2")
    assert "sweep: 4 trained" in output
    assert sorted(p.name for p in (tmp_path / "pool" / "logs" / "erm" / "lodo-A" / "h0").iterdir()
                  ) == [Path(n).name + ".log" for n in reference if "erm/lodo-A" in n]
    assert results(tmp_path / "pool") == reference
    output = sweep(tmp_path / "slurm", grid, "--launcher", "slurm", "--cluster", "local",
                   "--cpus-per-job", str(threads), "--wait")
    assert "sweep: 4 trained" in output
    assert results(tmp_path / "slurm") == reference
    submitted = [json.loads(x) for x in
                 (tmp_path / "slurm" / "slurm" / "submitted.jsonl").read_text().splitlines()]
    assert sorted(s["run"] for s in submitted) == sorted(reference)
    assert all(Path(s["log"]).is_file() for s in submitted)  # one log per run
    # launched again: every run is done, nothing is submitted
    output = sweep(tmp_path / "slurm", grid, "--launcher", "slurm", "--cluster", "local", "--wait")
    assert "4 runs: 4 done, 0 to run" in output and "submitted" not in output
    # and `align collect` makes the same tables of all three
    tables = {collected(tmp_path / name) for name in ("local", "pool", "slurm")}
    assert len(tables) == 1 and "| erm | 1 |" in tables.pop()


def collected(out: Path) -> str:
    result = CliRunner().invoke(app, ["collect", str(out)])
    assert result.exit_code == 0, result.output
    return (out / "collected" / "results.md").read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _mid_run(out: Path) -> tuple[Path, int] | None:
    """A run being trained with a checkpoint behind it: (its directory, its worker's PID)."""
    for lock in (out / "runs").glob("*/*/*/*/.lock"):
        run = lock.parent
        pid = lock.read_text().strip()
        if pid and (run / "checkpoints" / "last.pt").is_file() and not (run / "done").exists() \
                and _alive(int(pid)):
            return run, int(pid)
    return None


@pytest.mark.slow
def test_a_sweep_whose_worker_is_killed_resumes_and_equals_an_uninterrupted_one(tmp_path, threads):
    grid = make_grid(tmp_path, steps=40, eval_every=4)
    out = tmp_path / "pool"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "align.cli", "sweep", "--out", str(out), *grid,
         "--launcher", "pool", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    victim = None
    while victim is None and launcher.poll() is None and time.time() < deadline:
        victim = _mid_run(out)
        time.sleep(0.02)
    assert victim is not None, "no run was caught in the middle of training"
    killed, pid = victim
    os.kill(pid, signal.SIGKILL)
    output = launcher.communicate(timeout=300)[0]
    assert launcher.returncode == 2, output
    assert "a worker process of the pool died" in output
    finished = {p.parent for p in out.glob("runs/*/*/*/*/done")}
    assert killed not in finished
    stamps = {p: (p / "results.jsonl").stat().st_mtime_ns for p in finished}
    relaunch = sweep(out, grid, "--launcher", "pool", "--workers", "2")
    assert f"4 runs: {len(finished)} done, {4 - len(finished)} to run" in relaunch
    assert {p: (p / "results.jsonl").stat().st_mtime_ns for p in finished} == stamps  # skipped
    sweep(tmp_path / "local", grid)  # uninterrupted
    assert results(out) == results(tmp_path / "local")
    assert collected(out) == collected(tmp_path / "local")


def test_a_run_another_process_trains_is_skipped_and_reported(tmp_path):
    grid = make_grid(tmp_path)
    out = tmp_path / "sweep"
    dry = sweep(out, grid, "--dry-run")
    busy = out / dry.splitlines()[0].split()[1]  # the grid's first run
    busy.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom align.training.rundir import RunLock\n"
         f"with RunLock({str(busy)!r}):\n    print('locked', flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        output = sweep(out, grid)  # exit code 0: not an error
    finally:
        holder.kill()
        holder.wait()
    assert "sweep: 1 locked, 3 trained" in output
    assert f"being trained by another process (PID {holder.pid})" in output
    assert not RunFiles(busy).is_done()
    assert "1 done" not in sweep(out, grid) and RunFiles(busy).is_done()  # next time it trains


#: Waits for a `go` file, then runs the align command line with the tests' tiny settings: a
#: 32 px synthetic benchmark of 48 images per domain and a 3-step upstream pre-training.
_TOGETHER = """
import dataclasses, os, sys, time
from pathlib import Path
import align.pretrain as pretrain, align.regimes as regimes
from align.experiments import settings
regimes.DEFAULT_CONFIG = dataclasses.replace(regimes.DEFAULT_CONFIG, size=32, n_per_domain=48)
tiny = pretrain.PretrainConfig(steps=3, batch_size=8)
ensure = pretrain.ensure_pretrained
pretrain.ensure_pretrained = lambda *a, **kw: ensure(*a, **{**kw, "config": tiny})
settings.QUICKSTART_SETTINGS.update(image_size=32, batch_size=2, eval_every=2, num_workers=0)
from align.cli import main
Path(sys.argv[2]).touch()
while not Path(sys.argv[1]).exists():
    time.sleep(0.01)
sys.argv = ["align", *sys.argv[3:]]
main()
"""


def launch_together(tmp_path: Path, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Start `align` with each argument list in its own process, release them at once."""
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(len(commands))]
    procs = [subprocess.Popen([sys.executable, "-c", _TOGETHER, str(go), str(r), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r, args in zip(ready, commands)]
    while not all(r.exists() for r in ready):
        assert all(p.poll() is None for p in procs), [p.stdout.read() for p in procs]
        time.sleep(0.05)
    go.touch()
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), p.stdout.read())
            for p in procs]


@pytest.mark.slow
def test_two_launchers_on_a_fresh_folder_share_the_setup(tmp_path):
    """Regression (issue 11): two launchers started together on a fresh folder crashed with
    FileExistsError (both generated the synthetic data). Now one makes the data and the
    pretrained stand-in under locks, and every run is trained once."""
    out = tmp_path / "sweep"
    args = ["sweep", "--out", str(out), "--synthetic", "square-pretrained", "--algorithms", "erm",
            "--seeds", "0", "--steps", "2", "--test-domains", "photo", "texture"]
    done = launch_together(tmp_path, args, args)
    for proc in done:
        assert proc.returncode == 0, proc.stdout
    assert sum(p.stdout.count("generating the synthetic benchmark") for p in done) == 1
    runs = [p.parent for p in out.glob("runs/erm/*/h0/*/done")]
    assert len(runs) == 2
    for run in runs:
        assert [r["step"] for r in RunFiles(run).records()] == [2]  # trained once
        assert RunFiles(run).config()["pretrained"].startswith(str(out / "pretrained"))
    assert sorted(p.name for p in (out / "pretrained").iterdir() if p.suffix == ".pt") != []
    assert not list(out.glob(".*.lock")) and not list((out / "pretrained").glob("*.lock"))


@pytest.mark.slow
def test_two_benchmark_shards_started_together_on_a_fresh_folder(tmp_path):
    out = tmp_path / "bench"
    common = ["benchmark", "--out", str(out), "--regime", "square-scratch", "--algorithms", "erm",
              "--seeds", "0", "--steps", "2"]
    done = launch_together(tmp_path, common + ["--shard", "0/2"], common + ["--shard", "1/2"])
    for proc in done:
        assert proc.returncode == 0, proc.stdout
    assert len(list((out / "square-scratch" / "runs" / "erm").glob("test-*/seed0/done"))) == 4


def test_the_slurm_job_array_carries_every_option(tmp_path, monkeypatch):
    """Without a cluster: a stand-in `srun` and `sbatch` on the PATH (sbatch answers as Slurm
    does); submitit writes the real sbatch script, whose options are checked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho Submitted batch job 4242\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    grid = make_grid(tmp_path)
    out = tmp_path / "sweep"
    output = sweep(out, grid, "--launcher", "slurm", "--partition", "gpu", "--time", "90",
                   "--gpus-per-job", "1", "--cpus-per-job", "4", "--mem", "16",
                   "--account", "lab", "--array-parallelism", "2")
    assert "submitted 4 run(s) to slurm (job 4242_0 ...)" in output and "sweep: 4 submitted" in output
    (script,) = (out / "slurm").glob("*submission.sh")
    text = script.read_text()
    for option in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--cpus-per-task=4",
                   "--mem=16GB", "--account=lab", "--array=0-3%2", "--job-name=align-sweep"):
        assert f"#SBATCH {option}\n" in text, (option, text)
    submitted = [json.loads(x) for x in (out / "slurm" / "submitted.jsonl").read_text().splitlines()]
    assert [s["job_id"] for s in submitted] == [f"4242_{i}" for i in range(4)]
    assert not list(out.glob("runs/*/*/*/*/config.json"))  # nothing ran here
    result = CliRunner().invoke(app, expand_multi(["sweep", "--out", str(out), *grid,
                                                   "--launcher", "slurm"]))
    assert result.exit_code == 2 and "needs --time MINUTES" in result.output


def test_a_relaunch_leaves_out_runs_whose_slurm_job_is_queued_or_running(tmp_path, monkeypatch):
    """Stand-ins for sbatch (job ids 4242, 4243, ...) and sacct (answers from a file, as Slurm
    prints job array tasks); a relaunch submits only runs whose job failed, completed without
    finishing the run, or is unknown to sacct."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f"#!/bin/sh\nf={bin_dir}/next; n=$(cat $f 2>/dev/null || echo 4242)\n"
        "echo $((n + 1)) > $f; echo Submitted batch job $n\n")
    (bin_dir / "sacct").write_text(f"#!/bin/sh\ncat {bin_dir}/sacct.txt\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    grid = make_grid(tmp_path)
    out = tmp_path / "sweep"
    output = sweep(out, grid, "--launcher", "slurm", "--time", "90")
    assert "sweep: 4 submitted" in output
    first = [json.loads(x) for x in (out / "slurm" / "submitted.jsonl").read_text().splitlines()]
    assert [s["job_id"] for s in first] == [f"4242_{i}" for i in range(4)]
    (bin_dir / "sacct.txt").write_text("JobID|State|NodeList\n4242_0|RUNNING|n1\n"
                                       "4242_0.batch|RUNNING|n1\n4242_1|PENDING|None assigned\n"
                                       "4242_2|CANCELLED by 0|n1\n4242_3|COMPLETED|n1\n")
    output = sweep(out, grid, "--launcher", "slurm", "--time", "90")
    assert "2 run(s) already queued or running on Slurm: not submitted again" in output
    assert "sweep: 2 queued, 2 submitted" in output
    second = [json.loads(x) for x in (out / "slurm" / "submitted.jsonl").read_text().splitlines()]
    assert [s["run"] for s in second[4:]] == [first[2]["run"], first[3]["run"]]
    assert [s["job_id"] for s in second[4:]] == ["4243_0", "4243_1"]
    # sacct knows none of the latest jobs (or fails): every run not done is submitted again
    (bin_dir / "sacct.txt").write_text("JobID|State|NodeList\n")
    assert "sweep: 4 submitted" in sweep(out, grid, "--launcher", "slurm", "--time", "90")


def test_a_runs_user_error_is_reported_as_its_message_without_a_traceback(tiny_synth, tmp_path):
    """A run that fails for a reason its user can fix (here a loss that diverged) prints its
    message, as the CLI does, not a traceback; the sweep's summary still names it."""
    import io

    from rich.console import Console

    from align.experiments.sweep_launch import Task, execute

    from conftest import tiny_config

    buffer = io.StringIO()
    config = tiny_config(tiny_synth, tmp_path / "run", steps=4, hparams={"lr": 1e30})
    outcome = execute(Task("run", config, "[1/1] run"), Console(file=buffer, width=120))
    assert outcome.status == "failed" and outcome.message.startswith("NonFiniteLoss: step ")
    assert "error: step " in buffer.getvalue() and "Traceback" not in buffer.getvalue()
