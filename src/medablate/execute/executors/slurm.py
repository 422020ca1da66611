"""`medablate run --executor slurm`: a study's pending runs as one Slurm job array, submitted with submitit.

The driver (`medablate run` on the login node) prepares the study folder as usual, then submits one array task per
run that is neither finished nor already queued, with the partition, time, GPUs and CPUs of `runtime.slurm` (or
the `--slurm-*` options). A task loads the data itself (the decode cache makes that quick), claims its run like any
other medablate process, trains it, writes its folder and draws its figures, so the folder must be on storage
every node sees. A task Slurm stops (SIGTERM: `scontrol requeue`, preemption, `scancel`) writes a checkpoint of
the batch it was in and exits; one that reaches its time limit (SIGUSR2, 90 s before) does the same and requeues
itself (submitit's checkpointing); a requeued task resumes from that checkpoint, with the same numbers. A task that
dies without a word (SIGKILL, out of memory, a node lost) is submitted again by the driver.

The driver follows the runs from their history files and Slurm's queue with a progress bar, then writes the
analysis and the report; with `--detach` it returns once the array is queued (`medablate status DIR` shows the
progress, `medablate report DIR` writes the analysis and report when the runs are done). DIR/slurm/jobs.json
records every array (task i trains runs[i]); submitit keeps each task's script and log in DIR/slurm/.

submitit is an optional extra: `pip install 'medablate[slurm]'`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medablate.config.schema import SlurmConfig, to_plain
from medablate.core import atomic
from medablate.errors import UserError, on_signal
from medablate.execute.executors import AfterRun, StudyJob, register_executor, statuses
from medablate.execute.executors.local import train_one
from medablate.execute.prepare import RunContext
from medablate.execute.progress import follow
from medablate.folder import layout, rundir
from medablate.folder.records import SlurmArray, SlurmJobs

ERROR = "error"  # a task's result: (ERROR, message) for a UserError, else (status, "")
QUEUE_POLL_SECONDS = 3.0


def require_submitit() -> Any:
    try:
        import submitit  # an optional extra: imported only for --executor slurm
    except ImportError:
        raise UserError("--executor slurm needs submitit, which is not installed: pip install 'medablate[slurm]' (or "
                        "pip install submitit) in this environment, or leave out --executor slurm.") from None
    return submitit


def require_slurm() -> None:
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise UserError("--executor slurm: sbatch and squeue are not on PATH, so this machine cannot submit to Slurm. "
                        "Run the command on the cluster's login node (after `module load slurm` where the cluster "
                        "needs it), or use --executor local or ray.")


def jobs_file(out: Path) -> Path:
    return Path(out) / layout.SLURM / layout.JOBS_JSON


def read_jobs(out: Path) -> SlurmJobs:
    path = jobs_file(out)
    if not path.exists():
        return SlurmJobs()
    return SlurmJobs.model_validate(rundir.read_json(path))


def task_ids(array: SlurmArray) -> dict[str, str]:
    """run id -> the Slurm id of the task that trains it (`<array job>_<index>`, or the job's id alone)."""
    return dict(zip(array.runs, array.tasks, strict=True))


def queue(job_ids: list[str]) -> dict[str, str] | None:
    """Slurm's state of every task of these arrays still in the queue (`123_4` -> RUNNING, PENDING, ...); None when
    squeue does not answer (the controller busy or down: nothing is concluded from that)."""
    found: dict[str, str] = {}
    for job_id in job_ids:
        try:
            done = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True,
                                  timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            if "Invalid job id" in done.stderr:  # long finished and forgotten by the controller
                continue
            return None
        for line in done.stdout.splitlines():
            task, _, state = line.strip().partition(" ")
            found[task] = state
    return found


def queued_runs(out: Path) -> dict[str, str]:
    """Runs whose task (from any array submitted for this folder) is still queued or running: run id -> `<task>
    <state>`, e.g. `12_3 PENDING`."""
    arrays = read_jobs(out).arrays
    states = queue([a.job_id for a in arrays]) if arrays and shutil.which("squeue") else {}
    if states is None:
        return {}
    return {run: f"{task} {states[task]}" for array in arrays for run, task in task_ids(array).items() if task in states}


def parameters(config: SlurmConfig, name: str, device: str) -> dict[str, Any]:
    """submitit's AutoExecutor parameters for runtime.slurm."""
    gpus = config.gpus if config.gpus is not None else (1 if device == "cuda" else 0)
    found: dict[str, Any] = {"name": name, "timeout_min": config.time, "cpus_per_task": config.cpus,
                             "tasks_per_node": 1, "nodes": 1,
                             "slurm_additional_parameters": dict(config.additional)}
    if gpus:
        found["gpus_per_node"] = gpus
    if config.mem_gb is not None:
        found["mem_gb"] = config.mem_gb
    if config.parallelism is not None:
        found["slurm_array_parallelism"] = config.parallelism
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(config, key) is not None:
            found[f"slurm_{key}"] = getattr(config, key)
    if config.setup:
        found["slurm_setup"] = list(config.setup)
    return found


def described(wanted: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('slurm_')}={v}" for k, v in wanted.items()
                     if v not in ({}, None) and k not in ("nodes", "tasks_per_node"))


class SlurmTask:
    """One array task. submitit calls `checkpoint` when the task is about to time out and requeues what it returns:
    the same task, which resumes the run from its checkpoint."""

    def __call__(self, study_plain: dict[str, Any], out: str, run_id: str, threads: int,
                 after_run: AfterRun | None) -> tuple[str, str]:
        timed_out = signal.getsignal(signal.SIGUSR2)  # submitit's: checkpoint, requeue, exit
        stopped_by: list[int] = []

        def stop(signum: int, frame: Any) -> None:  # after the batch, with a checkpoint of it (errors.on_signal)
            stopped_by.append(signum)
            on_signal(signal.SIGTERM, frame)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGUSR2, stop)
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        epochs = len(rundir.read_history(rundir.trial_dir(Path(out), run_id)))
        task = "_".join(os.environ[k] for k in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID") if k in os.environ)
        print(f"medablate: run {run_id} in {out} (Slurm task {task or os.environ.get('SLURM_JOB_ID')}, restart "
              f"{restarts}, {epochs} epoch(s) done before)", flush=True)
        try:
            status = train_one(study_plain, out, run_id, threads, f"Slurm node {os.uname().nodename}", after_run)
        except UserError as exc:
            return ERROR, str(exc)
        except KeyboardInterrupt:  # Slurm stopped the task: the run's checkpoint is written, its claim released
            print(f"medablate: run {run_id} stopped by signal {stopped_by}; it resumes from its checkpoint", flush=True)
            if stopped_by and stopped_by[-1] == signal.SIGUSR2 and callable(timed_out):
                timed_out(signal.SIGUSR2, None)  # submitit requeues the task and exits
            sys.stdout.flush()
            os._exit(143)  # no result file: Slurm requeues the task, or it was cancelled
        return status, ""

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def submit(job: StudyJob, runs: list[str]) -> SlurmArray:
    """One array for these runs; recorded in DIR/slurm/jobs.json before anything else can happen."""
    submitit = require_submitit()
    config = job.study.runtime.slurm
    folder = Path(job.out).resolve() / layout.SLURM
    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=config.requeues)
    wanted = parameters(config, f"medablate-{job.study.name}", job.study.training.device)
    executor.update_parameters(**wanted)
    plain, out, n = to_plain(job.study), str(Path(job.out).resolve()), len(runs)
    try:
        jobs = executor.map_array(SlurmTask(), [plain] * n, [out] * n, runs, [config.cpus] * n, [job.after_run] * n)
    except Exception as exc:  # sbatch refused: a partition or account that does not exist, too many GPUs, ...
        message = (str(exc).strip().splitlines() or [""])[-1].split("submission failed: ")[-1]
        raise UserError(f"Slurm refused the job array: {message}. Check runtime.slurm (or the --slurm-* options): "
                        f"{described(wanted)}.") from None
    array = SlurmArray(job_id=str(jobs[0].job_id).split("_")[0], runs=runs, tasks=[str(j.job_id) for j in jobs],
                       submitted=datetime.now(UTC).isoformat(timespec="seconds"),
                       parameters={k: v for k, v in wanted.items() if k != "slurm_setup"})
    record = read_jobs(job.out)
    record.arrays.append(array)
    atomic.write_json(jobs_file(job.out), record.model_dump(mode="json"))
    return array


def result(out: Path, task: str) -> tuple[str, str] | None:
    """What a task returned, from submitit's result file; None when it wrote none (killed, cancelled, requeued)."""
    from submitit.core.utils import pickle_load

    path = Path(out) / layout.SLURM / f"{task}_0_result.pkl"
    if not path.exists():
        return None
    kind, value = pickle_load(path)
    if kind == "success":
        return value
    return ERROR, f"the task failed: {str(value).strip().splitlines()[-1] if str(value).strip() else value}"


def stopped_by_slurm(out: Path, task: str) -> bool:
    """Whether the task's last start ended at Slurm's word (SIGTERM: scancel, preemption), from its log."""
    path = Path(out) / layout.SLURM / f"{task}_0_log.out"
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.startswith("medablate: run")] \
        if path.exists() else []
    return bool(lines) and "stopped by signal" in lines[-1]


class Waiter:
    """Follows tasks through Slurm's queue: a task has ended once squeue no longer lists it. A task that ended
    without finishing its run, without a word and without Slurm stopping it (SIGKILL, out of memory, a node lost)
    is submitted again, up to runtime.slurm.requeues times per run, and resumes from the run's checkpoint."""

    def __init__(self, job: StudyJob, tasks: dict[str, str]) -> None:
        self.job, self.out, self.tasks = job, job.out, dict(tasks)  # run id -> task id, of the tasks still to end
        self.arrays = sorted({task.split("_")[0] for task in tasks.values()})
        self.ended: dict[str, str] = {}  # run id -> its last task
        self.resubmitted: dict[str, int] = {}
        self.checked = 0.0

    def __call__(self, seconds: float) -> list[str]:
        time.sleep(seconds)
        if time.monotonic() - self.checked < QUEUE_POLL_SECONDS:
            return []
        self.checked = time.monotonic()
        states = queue(self.arrays)
        if states is None:
            return []
        gone = [run for run, task in self.tasks.items() if task not in states]
        for run in gone:
            self.ended[run] = self.tasks.pop(run)
        self.resubmit([run for run in gone if self.lost(run)])
        return gone

    def lost(self, run: str) -> bool:
        task = self.ended[run]
        return (rundir.run_status(rundir.trial_dir(self.out, run)) not in rundir.FINISHED
                and result(self.out, task) is None and not stopped_by_slurm(self.out, task)
                and self.resubmitted.get(run, 0) < self.job.study.runtime.slurm.requeues)

    def resubmit(self, runs: list[str]) -> None:
        if not runs:
            return
        for run in runs:
            self.resubmitted[run] = self.resubmitted.get(run, 0) + 1
        array = submit(self.job, runs)
        self.job.console.print(f"Slurm: task(s) of {', '.join(runs)} ended without finishing their run (killed, out of "
                               f"memory, a node lost): submitted again as array {array.job_id}; they resume from their "
                               "checkpoints.", highlight=False)
        self.tasks |= task_ids(array)
        self.arrays.append(array.job_id)

    def done(self) -> bool:
        return not self.tasks


@register_executor("slurm")
def train_on_slurm(job: StudyJob, context: RunContext) -> list[str]:
    """Submit every run that is neither finished nor queued as one job array; follow them (or return at once with
    --detach); the statuses of all runs."""
    require_submitit()
    require_slurm()
    logging.getLogger("submitit").setLevel(logging.ERROR)  # its sacct warnings: accounting is often off
    runs = job.plan.runs
    queued = queued_runs(job.out)
    todo = [r.id for r in runs
            if r.id not in queued and rundir.run_status(rundir.trial_dir(job.out, r.id)) not in rundir.FINISHED]
    tasks = {run: state.split()[0] for run, state in queued.items()}  # `<task> <state>`
    if todo:
        array = submit(job, todo)
        tasks |= task_ids(array)
        job.console.print(f"Slurm: job array {array.job_id} with {len(todo)} task(s) ({described(array.parameters)}); "
                          f"scripts and logs "
                          f"in {job.out / layout.SLURM}/", highlight=False)
    if todo and job.study.training.device == "auto" and job.study.runtime.slurm.gpus is None:
        job.console.print("[yellow]Note:[/] no GPU was asked for (training.device is auto): the tasks train on CPUs. "
                          "Give --slurm-gpus 1 (or runtime.slurm.gpus) on a GPU partition.", highlight=False)
    if queued:
        job.console.print(f"Slurm: {len(queued)} run(s) already queued or running from an earlier submission: "
                          + ", ".join(f"{r} {s}" for r, s in queued.items()), highlight=False)
    if job.detach:
        job.console.print(f"Detached: the runs go on in Slurm. `medablate status {job.out}` shows their progress; "
                          f"when all are done, `medablate report {job.out}` writes the analysis and the report "
                          "(running this command again resubmits any run that stopped without finishing).",
                          highlight=False)
        return statuses(job)
    waiter = Waiter(job, tasks)
    try:
        follow(job.console, job.out, runs, f"study {job.study.name} (slurm)", job.show_progress, waiter, waiter.done)
    except KeyboardInterrupt:
        job.console.print(f"The runs go on in Slurm ({', '.join(waiter.arrays)}): `medablate status {job.out}` shows "
                          f"them, `scancel {' '.join(waiter.arrays)}` stops them.", highlight=False)
        raise
    problems = [found[1] for task in waiter.ended.values() if (found := result(job.out, task)) and found[0] == ERROR]
    if problems:
        raise UserError(problems[0])
    return statuses(job)
