"""Executors: how a prepared study's runs get trained (here, in worker processes, as Ray tasks, ...).

An executor is one file in this folder: a function `train(job, context) -> statuses of all runs`, registered
with @register_executor(name). It gets the prepared study (`StudyJob`) and the driver's RunContext (the data on
its device; executors that train elsewhere ignore it and let each process prepare its own), trains every run no
other process holds, and follows the others' progress through `follow` (progress.py). None imports the runner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.console import Console

from medablate.config.schema import Study
from medablate.core.registry import EXECUTORS
from medablate.execute.plan import Plan
from medablate.execute.prepare import RunContext
from medablate.folder import rundir


@dataclass
class StudyJob:
    """A study the driver has prepared (study.json written, every run's config checked), to be trained."""

    study: Study
    out: Path
    plan: Plan
    console: Console
    threads: int  # torch threads of the driver process
    data_note: str = ""  # how results.csv names the data
    workers: int = 1  # --workers
    background: bool = False  # the CLI's choice: a run's final files are written while the next one trains
    show_progress: bool = True
    address: str | None = None  # --address (Ray)
    resources: dict[str, float] = field(default_factory=dict)  # --ray-resources
    elsewhere: list[str] = field(default_factory=list)  # runs another process was training while this one ran
    detach: bool = False  # --detach: submit the runs and return (executors that train elsewhere)
    after_run: AfterRun | None = None  # a task's run is written: draw its figures there (set by the runner)


AfterRun = Callable[[Path, str, RunContext], None]  # (run folder, title, context): what a task does after its run


class Executor(Protocol):
    def __call__(self, job: StudyJob, context: RunContext) -> list[str]: ...


def statuses(job: StudyJob) -> list[str]:
    """Every run's status as its folder shows it now (whoever trained it)."""
    return [rundir.run_status(rundir.trial_dir(job.out, r.id)) for r in job.plan.runs]


def register_executor(name: str) -> Callable[[Executor], Executor]:
    def add(train: Executor) -> Executor:
        return EXECUTORS.register(name, train)

    return add


def executor(name: str) -> Executor:
    found: dict[str, Executor] = EXECUTORS.entries()
    return found[name]
