"""The slurm launcher's engine: submitit (optional: `pip install "align[slurm]"`).

Every run of a launch goes out in one job array (`AutoExecutor.map_array`), one array task per
run, each with the job's partition, wall-clock limit, GPUs, CPUs, memory and account, and at
most `--array-parallelism` tasks running at once. A task is a `submitit.helpers.Checkpointable`:
on a timeout or a preemption submitit requeues it (at most 3 times, submitit's default) and the
run resumes from its last checkpoint. Each task writes its own log in submitit's folder,
`OUT/slurm/<job id>_0_log.out` (and `.err`); `OUT/slurm/submitted.jsonl` names each run's job and
log. Launched again, the sweep submits only the runs that are not done and not already queued
or running on Slurm: the state of each run's latest job is asked of `sacct` (one call, through
submitit's watcher); where sacct cannot answer, the run is submitted again, and its run lock keeps
the two jobs from training it together (the later one stops, "locked").

`--cluster local` gives the same job array to submitit's local executor (one process per task,
on this machine): a sweep can be tried end to end before it goes to the cluster.
"""

from __future__ import annotations

import time
from pathlib import Path

import submitit
from rich.console import Console
from submitit.slurm.slurm import SlurmInfoWatcher

from .. import io
from ..errors import ConfigError
from .sweep_launch import LaunchOptions, Outcome, Task, execute, line

#: `--time` of a `--cluster local` launch when none is given (submitit's own default, 5 minutes
#: on Slurm and 2 locally, would stop most runs): a week.
LOCAL_TIME_MIN = 7 * 24 * 60


#: sacct states of a job that is queued, running or about to run again: its run is not submitted
#: again (a job "CANCELLED by 0", FAILED, TIMEOUT (after its requeues) or COMPLETED whose run is
#: not done is).
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                           "CONFIGURING", "COMPLETING", "PREEMPTED", "SUSPENDED", "RESIZING",
                           "SIGNALING", "STAGE_OUT", "READY"})


def active_jobs(folder: Path, runs: list[str]) -> dict[str, tuple[str, str]]:
    """{run: (job id, state)} of the `runs` whose latest Slurm job (`folder/submitted.jsonl`) is
    queued or running, by one `sacct` call. {} where nothing was submitted to Slurm yet, and the
    runs sacct does not know are left out (submitted again)."""
    path = folder / "submitted.jsonl"
    if not path.is_file():
        return {}
    wanted, latest = set(runs), {}
    for entry in io.read_jsonl(path):
        if entry.get("cluster") == "slurm" and entry.get("run") in wanted:
            latest[entry["run"]] = str(entry["job_id"])
    if not latest:
        return {}
    watcher = SlurmInfoWatcher(delay_s=0)  # our own: submitit's shared one caches finished states
    for job_id in set(latest.values()):
        watcher.register_job(job_id)
    watcher.update()  # one sacct call; on failure submitit warns and every state is UNKNOWN
    states = {run: watcher.get_state(job_id, mode="cache") for run, job_id in latest.items()}
    return {run: (latest[run], state) for run, state in states.items()
            if state.split(" ")[0].upper() in ACTIVE_STATES}


class RunJob(submitit.helpers.Checkpointable):
    """A run as a submitit job. Requeued after a timeout with the same task (submitit's default
    `checkpoint`): the trainer resumes it from `checkpoints/last.pt`."""

    def __call__(self, task: Task) -> Outcome:
        return execute(task)


def executor(options: LaunchOptions, folder: Path, name: str) -> submitit.AutoExecutor:
    """submitit's executor with the launch's options."""
    if options.time is None and options.cluster != "local":
        raise ConfigError("--launcher slurm needs --time MINUTES, each job's wall-clock limit (a "
                          "run that reaches it is requeued and resumes from its checkpoint)")
    ex = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    ex.update_parameters(
        name=name, timeout_min=options.time or LOCAL_TIME_MIN, cpus_per_task=options.cpus_per_job,
        gpus_per_node=options.gpus_per_job, mem_gb=options.mem,
        slurm_partition=options.partition, slurm_account=options.account,
        slurm_array_parallelism=options.array_parallelism)
    return ex


def submit(tasks: list[Task], options: LaunchOptions, root: Path,
           console: Console) -> list[Outcome]:
    """Submit `tasks` as one job array, leaving out runs whose job is still queued or running
    (outcome "queued"); with `options.wait`, wait and return each outcome."""
    folder = root / "slurm"
    active = active_jobs(folder, [t.name for t in tasks]) if options.cluster == "slurm" else {}
    queued = [Outcome(t.name, "queued", f"job {active[t.name][0]} is {active[t.name][1]}")
              for t in tasks if t.name in active]
    if queued:
        console.print(f"{len(queued)} run(s) already queued or running on Slurm: not submitted "
                      "again", highlight=False)
    tasks = [t for t in tasks if t.name not in active]
    if not tasks:
        return queued
    jobs = executor(options, folder, f"align-{root.resolve().name}").map_array(RunJob(), tasks)
    for task, job in zip(tasks, jobs):
        io.append_jsonl(folder / "submitted.jsonl", {
            "run": task.name, "job_id": job.job_id, "cluster": options.cluster,
            "log": str(job.paths.stdout), "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
    console.print(f"submitted {len(jobs)} run(s) to {options.cluster} (job {jobs[0].job_id}"
                  f"{' ...' if len(jobs) > 1 else ''}); logs in {folder}", highlight=False)
    if not options.wait:
        return queued + [Outcome(t.name, "submitted", f"job {j.job_id}")
                         for t, j in zip(tasks, jobs)]
    outcomes = []
    for task, job in zip(tasks, jobs):
        try:
            outcome = job.result()
        except Exception as err:  # noqa: BLE001 - submitit's job errors; the log says more
            outcome = Outcome(task.name, "failed", f"job {job.job_id} ({type(err).__name__}); "
                              f"log {job.paths.stderr}")
        outcomes.append(outcome)
        console.print(line(outcome, task.label), highlight=False)
    return queued + outcomes
