"""`medablate run --workers N`: N worker processes on one machine share a study through the runs' claims.

Each worker (a fresh, spawned process) loads the data itself (the decode-once cache makes that quick), then
takes the next run nobody holds, exactly as several `medablate run` commands on one --out would; torch's threads
are split between the workers. The parent shows the progress of all of them (epochs written to the runs'
history files) and, once they are done, writes the analysis and the report.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from medablate import rundir

if TYPE_CHECKING:
    from medablate.study import StudyRunner


def worker(study: dict[str, Any], out: str, threads: int) -> list[str]:
    """One worker process: train every run that is free, one after another."""
    from medablate.config import Study
    from medablate.study import StudyRunner

    runner = StudyRunner(Study.model_validate(study), Path(out), Console(stderr=True), threads=threads)
    runner.show_progress = False
    return runner.train_only()


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
    context = multiprocessing.get_context("spawn")  # fresh processes: no forked torch or CUDA state
    runner.console.print(f"{runner.workers} workers x {threads} torch thread(s)", highlight=False)
    with ProcessPoolExecutor(max_workers=runner.workers, mp_context=context) as pool, runner._progress() as progress:
        futures = [pool.submit(worker, to_plain(runner.study), str(runner.out), threads) for _ in range(runner.workers)]
        task = progress.add_task(f"study {runner.study.name} ({runner.workers} workers)", total=total)
        while not all(f.done() for f in futures):
            progress.update(task, completed=epochs_done(runner.out, runs))
            wait(futures, timeout=0.5)
        progress.update(task, completed=epochs_done(runner.out, runs))
        for future in futures:
            future.result()  # a worker's UserError or crash surfaces here
    return [rundir.run_status(rundir.trial_dir(runner.out, r.id)) for r in runs]
