"""`medablate run --workers N`: N worker processes on one machine share a study through the runs' claims.

Each worker (a fresh, spawned process) loads the data itself (the decode-once cache makes that quick), then
takes the next run nobody holds, exactly as several `medablate run` commands on one --out would; torch's threads
are split between the workers. The parent shows the progress of all of them (epochs written to the runs'
history files) and, once they are done, writes the analysis and the report.
"""

from __future__ import annotations

import os
from concurrent.futures import wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from medablate import rundir
from medablate.children import process_pool

if TYPE_CHECKING:
    from medablate.study import StudyRunner


def parse_workers(text: str, device: str) -> int:
    """--workers: a positive number, or auto."""
    if text.strip().lower() == "auto":
        return auto_workers(device)[0]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        from medablate.errors import UserError

        raise UserError(f"--workers {text!r} is not a number of worker processes: use a whole number of at least 1, or "
                        "auto.")
    return capped_workers(value)


def capped_workers(value: int) -> int:
    """At most one worker per usable core: each holds its own copy of the data and model (about 0.4 GB for the
    course MLP), and more processes than cores only queue for them (64 on 2 cores once held 17 of 23 GB)."""
    from medablate.engine import usable_cores

    cores = usable_cores()
    if value > cores:
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]Note:[/] --workers {value} is more than the {cores} core(s) this process "
                                   f"may use: starting {cores} worker(s).", highlight=False)
        return cores
    return value


def gpus(device: str) -> list[str]:
    """The GPUs workers may use (CUDA_VISIBLE_DEVICES indices), none when training stays on the CPU."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def auto_workers(device: str) -> tuple[int, list[str]]:
    """--workers auto: one per GPU where there are several; on one GPU, as many as its free memory (4 GiB each)
    and the cores (2 each) allow, at most 8; on a CPU one (the torch threads already use every core)."""
    import torch

    cards = gpus(device)
    if len(cards) > 1:
        return len(cards), cards
    if not cards:
        return 1, []
    from medablate.engine import usable_cores

    cores = usable_cores()
    free, _ = torch.cuda.mem_get_info()
    return max(1, min(8, cores // 2, int(free // 2**32))), cards


def worker(study: dict[str, Any], out: str, threads: int, gpu: str | None = None) -> list[str]:
    """One worker process: train every run that is free, one after another (on its own GPU where given)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before this process first touches CUDA
    import signal

    from medablate.config import Study
    from medablate.errors import on_signal

    signal.signal(signal.SIGTERM, on_signal)  # Ctrl-C reaches every worker: each stops after its batch, saved
    signal.signal(signal.SIGINT, on_signal)
    try:
        from medablate.study import StudyRunner

        runner = StudyRunner(Study.model_validate(study), Path(out), Console(stderr=True), threads=threads)
        runner.show_progress = False
        return runner.train_only()
    except KeyboardInterrupt:  # stopped (SIGTERM, Ctrl-C, the parent's pool stopping): the run in training saved
        return []  # its batch; the parent says how the study stopped
    finally:  # nothing left to save: a later SIGTERM (a broken pool's, then the parent's) ends this process quietly,
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not with a traceback from an atexit callback
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def epochs_done(out: Path, runs: list[Any]) -> int:
    total = 0
    for run in runs:
        history = rundir.trial_dir(out, run.id) / rundir.HISTORY_CSV
        if history.exists():
            total += max(0, min(len(history.read_text().splitlines()) - 1, run.trial.config.training.epochs))
    return total


def train_in_workers(runner: "StudyRunner", threads: int) -> list[str]:
    """Train the study's runs in runner.workers spawned processes; the statuses of all runs when they are done."""
    from medablate.config import to_plain

    runs = runner.plan.runs
    total = sum(r.trial.config.training.epochs for r in runs)
    runner.console.print(f"{runner.workers} workers x {threads} torch thread(s)", highlight=False)
    # spawned (fresh processes: no forked torch or CUDA state), dying with this process; stopped with SIGTERM (each
    # checkpoints after its batch) when this one is interrupted
    with process_pool(runner.workers) as pool, runner._progress() as progress:
        cards = gpus(runner.study.training.device)
        futures = [pool.submit(worker, to_plain(runner.study), str(runner.out), threads,
                               cards[i % len(cards)] if len(cards) > 1 else None) for i in range(runner.workers)]
        task = progress.add_task(f"study {runner.study.name} ({runner.workers} workers)", total=total)
        while not all(f.done() for f in futures):
            progress.update(task, completed=epochs_done(runner.out, runs))
            wait(futures, timeout=0.5)
        progress.update(task, completed=epochs_done(runner.out, runs))
        for future in futures:
            try:
                future.result()  # a worker's UserError or crash surfaces here
            except BrokenProcessPool:
                from medablate.errors import UserError

                raise UserError("a worker process died without a word (killed, or out of memory): every run it had "
                                "finished is kept; run the same command again to resume the others (with fewer "
                                "--workers if memory is short).") from None
    return [rundir.run_status(rundir.trial_dir(runner.out, r.id)) for r in runs]
