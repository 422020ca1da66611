"""`medablate run --workers N`: N worker processes on one machine share a study through the runs' claims.

Each worker (a fresh, spawned process) loads the data itself (the decode-once cache makes that quick), then
takes the next run nobody holds, exactly as several `medablate run` commands on one --out would; torch's threads
are split between the workers. The parent shows the progress of all of them (epochs written to the runs'
history files) and, once they are done, writes the analysis and the report.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from medablate.config.schema import Study, to_plain
from medablate.core.children import process_pool
from medablate.errors import UserError, on_signal
from medablate.execute.executors import StudyJob, register_executor, statuses
from medablate.execute.executors.local import train_prepared, units
from medablate.execute.prepare import RunContext
from medablate.execute.progress import follow
from medablate.folder import rundir
from medablate.train.engine import usable_cores


def parse_workers(text: str, device: str) -> int:
    """--workers: a positive number, or auto."""
    if text.strip().lower() == "auto":
        return auto_workers(device)[0]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"--workers {text!r} is not a number of worker processes: use a whole number of at least 1, or "
                        "auto.")
    return capped_workers(value)


def capped_workers(value: int) -> int:
    """At most one worker per usable core: each holds its own copy of the data and model (about 0.4 GB for the
    course MLP), and more processes than cores only queue for them (64 on 2 cores once held 17 of 23 GB)."""
    cores = usable_cores()
    if value > cores:
        Console(stderr=True).print(f"[yellow]Note:[/] --workers {value} is more than the {cores} core(s) this process "
                                   f"may use: starting {cores} worker(s).", highlight=False)
        return cores
    return value


def gpus(device: str) -> list[str]:
    """The GPUs workers may use (CUDA_VISIBLE_DEVICES indices), none when training stays on the CPU."""
    if device == "cpu" or not torch.cuda.is_available():
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def auto_workers(device: str) -> tuple[int, list[str]]:
    """--workers auto: one per GPU where there are several; on one GPU, as many as its free memory (4 GiB each)
    and the cores (2 each) allow, at most 8; on a CPU one (the torch threads already use every core). Each worker
    trains a fused group of seeds (or a run) at a time, and the study starts no more workers than it has groups
    (or runs) left (train_in_workers)."""
    cards = gpus(device)
    if len(cards) > 1:
        return len(cards), cards
    if not cards:
        return 1, []
    cores = usable_cores()
    free, _ = torch.cuda.mem_get_info()
    return max(1, min(8, cores // 2, int(free // 2**32))), cards


def worker(study: dict[str, Any], out: str, threads: int, gpu: str | None = None) -> list[str]:
    """One worker process: train every run that is free, one after another (on its own GPU where given)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before this process first touches CUDA
    signal.signal(signal.SIGTERM, on_signal)  # Ctrl-C reaches every worker: each stops after its batch, saved
    signal.signal(signal.SIGINT, on_signal)
    try:
        return train_prepared(Study.model_validate(study), Path(out), threads, Console(stderr=True))
    except KeyboardInterrupt:  # stopped (SIGTERM, Ctrl-C, the parent's pool stopping): the run in training saved
        return []  # its batch; the parent says how the study stopped
    finally:  # nothing left to save: a later SIGTERM (a broken pool's, then the parent's) ends this process quietly,
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not with a traceback from an atexit callback
        signal.signal(signal.SIGINT, signal.SIG_DFL)


@register_executor("workers")
def train_in_workers(job: StudyJob, context: RunContext) -> list[str]:
    """Train the study's runs in job.workers spawned processes (no more than there are fused groups or runs left to
    train: a worker with nothing to take would only load the data); the statuses of all runs when they are done."""
    runs = job.plan.runs
    left = [u for u in units(runs, context)
            if any(rundir.run_status(rundir.trial_dir(job.out, r.id)) not in rundir.FINISHED for r in u)]
    if 0 < len(left) < job.workers:
        job.console.print(f"{len(left)} fused group(s) or run(s) left to train: {len(left)} of the {job.workers} "
                          "workers asked for", highlight=False)
        job.workers = len(left)
    threads = max(1, job.threads // job.workers)
    job.console.print(f"{job.workers} workers x {threads} torch thread(s)", highlight=False)
    # spawned (fresh processes: no forked torch or CUDA state), dying with this process; stopped with SIGTERM (each
    # checkpoints after its batch) when this one is interrupted
    with process_pool(job.workers) as pool:
        cards = gpus(job.study.training.device)
        futures = [pool.submit(worker, to_plain(job.study), str(job.out), threads,
                               cards[i % len(cards)] if len(cards) > 1 else None) for i in range(job.workers)]
        follow(job.console, job.out, runs, f"study {job.study.name} ({job.workers} workers)", job.show_progress,
               wait_some=lambda seconds: (wait(futures, timeout=seconds), [])[1],
               done=lambda: all(f.done() for f in futures))
        for future in futures:
            try:
                future.result()  # a worker's UserError or crash surfaces here
            except BrokenProcessPool:
                raise UserError("a worker process died without a word (killed, or out of memory): every run it had "
                                "finished is kept; run the same command again to resume the others (with fewer "
                                "--workers if memory is short).") from None
    return statuses(job)
