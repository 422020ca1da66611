"""`medablate run --executor ray`: each run of a study is a Ray task, on one machine or a cluster.

The driver (the `medablate run` process) prepares the study folder as usual, then submits one task per run that
is not finished. A task gets only the study (as plain data), the folder and a run id: it loads the data itself
(the decode cache makes that quick, and a Ray worker keeps it for its next task), claims the run like any other
medablate process, trains it and writes its folder. So the folder must be on storage every node sees (NFS or
similar: Ray no longer syncs files). A task whose worker dies (a node lost, out of memory, SIGKILL) is retried
by Ray (`max_retries`) and resumes from the run's last checkpoint, with the same numbers. The driver shows the
progress of all runs from their history files, then writes the analysis and the report.

Ray is an optional extra: `pip install 'medablate[ray]'`.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from medablate.config.schema import to_plain
from medablate.errors import UserError
from medablate.execute.executors import StudyJob, register_executor, statuses
from medablate.execute.executors.local import train_one
from medablate.execute.prepare import RunContext
from medablate.execute.progress import follow
from medablate.folder import rundir

FORWARDED = ("MEDABLATE_", "OMP_NUM_THREADS", "MKL_NUM_THREADS")  # environment variables the tasks see too
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory")


def require_ray() -> Any:
    try:
        import ray  # an optional extra: imported only for --executor ray
    except ImportError:
        raise UserError("--executor ray needs Ray, which is not installed: pip install 'medablate[ray]' (or pip install "
                        "ray) in this environment and on every node, or leave out --executor ray.") from None
    return ray


def parse_resources(text: str | None) -> dict[str, float]:
    """`num_cpus=2,num_gpus=0.5` -> {"num_cpus": 2.0, "num_gpus": 0.5}, with a clear error for anything else."""
    found: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in RESOURCE_KEYS:
            raise UserError(f"--ray-resources: unknown resource '{key}' in '{text}'; use {', '.join(RESOURCE_KEYS)}, "
                            "e.g. --ray-resources num_cpus=2,num_gpus=0.5.")
        try:
            found[key] = float(value)
        except ValueError:
            raise UserError(f"--ray-resources: {key}={value!r} is not a number; e.g. --ray-resources num_cpus=2.") from None
        if found[key] < 0 or (key == "num_gpus" and found[key] > 1 and found[key] != int(found[key])):
            raise UserError(f"--ray-resources: {key}={value} is not a valid amount (a GPU fraction is at most 1).")
        if key == "num_cpus" and found[key] <= 0:
            raise UserError(f"--ray-resources: num_cpus={value} would let Ray start every run at once on the same "
                            "cores (a task that needs no CPU is never held back): give each run at least part of a "
                            "CPU, e.g. num_cpus=1.")
    return found


CONNECT_SECONDS = 10.0


def check_reachable(address: str | None, seconds: float = CONNECT_SECONDS) -> None:
    """A cluster address of the form host:port (or ray://host:port) must answer within `seconds`: ray.init would
    otherwise wait for an unreachable head for minutes without a word."""
    if not address or address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r} is not host:port (e.g. 10.0.0.1:6379, or auto for the cluster "
                        "`ray start` made on this machine).")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise UserError(f"--address {address}: nothing answered there within {seconds:.0f} s ({exc.strerror or exc}). "
                        "Check the head's address and port (`ray status` on the head prints it) and that this machine "
                        "can reach it, or leave out --address for a local Ray.") from None


def default_resources(ray: Any, device: str) -> dict[str, float]:
    """One CPU per run on CPU clusters (so many runs train at once); a quarter of a GPU and two CPUs per run where
    the cluster has GPUs and the study may use them."""
    available = ray.cluster_resources()
    if device != "cpu" and available.get("GPU", 0) >= 1:
        return {"num_cpus": 2.0 if available.get("CPU", 0) >= 8 else 1.0, "num_gpus": 0.25}
    return {"num_cpus": 1.0}


def run_task(study_plain: dict[str, Any], out: str, run_id: str, threads: int) -> str:
    """One Ray task: claim the run, train it (resuming from its checkpoint), write its folder; its status."""
    return train_one(study_plain, out, run_id, threads, where=f"Ray node {socket.gethostname()}")


def forwarded_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED)}


@register_executor("ray")
def train_on_ray(job: StudyJob, context: RunContext) -> list[str]:
    """Submit every unfinished run as a Ray task and show their progress; the statuses of all runs."""
    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        check_reachable(job.address)
        try:
            ray.init(address=job.address, include_dashboard=False, logging_level="ERROR", log_to_driver=True)
        except ConnectionError as exc:
            raise UserError(f"--address {job.address}: cannot connect to a Ray cluster there ({exc}). Start one with "
                            "`ray start --head` (see the README), or leave out --address for a local one.") from None
    try:
        wanted = job.resources or default_resources(ray, job.study.training.device)
        threads = max(1, int(wanted.get("num_cpus", 1)))
        task = ray.remote(run_task).options(max_retries=3, retry_exceptions=False,
                                            runtime_env={"env_vars": forwarded_environment()}, **wanted)
        runs = job.plan.runs
        todo = [r for r in runs if rundir.run_status(rundir.trial_dir(job.out, r.id)) not in rundir.FINISHED]
        described = ", ".join(f"{k}={v:g}" for k, v in wanted.items())
        job.console.print(f"Ray: {len(todo)} run(s) as tasks ({described} each) on "
                          f"{ray.cluster_resources().get('CPU', 0):g} CPU(s), "
                          f"{ray.cluster_resources().get('GPU', 0):g} GPU(s)", highlight=False)
        plain = to_plain(job.study)
        refs = {task.remote(plain, str(job.out), r.id, threads): r.id for r in todo}
        waiting = list(refs)

        def wait_some(seconds: float) -> list[str]:  # a line per finished run, as the in-process runner prints
            nonlocal waiting
            ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=seconds)
            return [refs[ref] for ref in ready]

        follow(job.console, job.out, runs, f"study {job.study.name} (ray)", job.show_progress, wait_some,
               done=lambda: not waiting)
        try:
            ray.get(list(refs))
        except ray.exceptions.RayTaskError as exc:  # a task's UserError: one paragraph, as if raised here
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            raise
    finally:
        if started_here:
            ray.shutdown()
            time.sleep(0.1)
    return statuses(job)
