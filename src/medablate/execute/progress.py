"""What a study's progress looks like on the terminal, however its runs are trained: a bar for the study
(epochs), one for the run training here (steps), and a line per finished run."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from medablate.execute.plan import Run
from medablate.execute.run import Event
from medablate.folder import rundir
from medablate.folder.records import RunRecord


def progress_bars(console: Console, show: bool = True) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=console, transient=False, disable=not show)


def report_run(console: Console, out: Path, metrics: RunRecord) -> None:
    """The line a finished run gets."""
    if metrics.status == rundir.DONE:
        tail = f", test acc {metrics.test.accuracy:.3f}" if metrics.test else ""
        tail += f", stopped early after epoch {metrics.stopped_early_epoch}" if metrics.stopped_early_epoch else ""
        console.print(f"[green]done[/] {metrics.run}: val acc {metrics.val_acc or 0:.3f} of {rundir.BEST_PT} (epoch "
                      f"{metrics.best_epoch}, by {metrics.monitor}); highest val acc at any epoch "
                      f"{metrics.highest_val_acc or 0:.3f} (epoch {metrics.highest_val_acc_epoch}){tail}, "
                      f"{metrics.seconds or 0:.0f} s")
    elif metrics.status == rundir.FAILED:
        console.print(f"[red]run {metrics.run} failed:[/] {escape(metrics.error or '')} (details in "
                      f"{rundir.trial_dir(out, metrics.run) / rundir.METRICS_JSON})", highlight=False)
    elif metrics.status == rundir.DIVERGED:
        console.print(f"[yellow]diverged[/] {metrics.run}: non-finite loss at epoch {metrics.diverged_epoch}")


def epochs_done(out: Path, runs: list[Run]) -> int:
    """Epochs the runs' history files hold: the progress of runs trained by other processes."""
    total = 0
    for run in runs:
        history = rundir.trial_dir(out, run.id) / rundir.HISTORY_CSV
        if history.exists():
            total += max(0, min(len(history.read_text().splitlines()) - 1, run.trial.config.training.epochs))
    return total


def follow(console: Console, out: Path, runs: list[Run], label: str, show: bool,
           wait_some: Callable[[float], Iterable[str]], done: Callable[[], bool]) -> None:
    """Show the progress of runs other processes train, from their history files, until done(): wait_some(seconds)
    waits up to that long and returns the ids of runs whose task just ended (each gets its line)."""
    with progress_bars(console, show) as progress:
        bar = progress.add_task(label, total=sum(r.trial.config.training.epochs for r in runs))
        while not done():
            for run_id in wait_some(0.5):
                metrics = rundir.metrics_or_none(rundir.trial_dir(out, run_id))
                if metrics:
                    report_run(console, out, metrics)
            progress.update(bar, completed=epochs_done(out, runs))
        progress.update(bar, completed=epochs_done(out, runs))


class ProgressEvents:
    """Renders the Events of runs trained in this process."""

    def __init__(self, console: Console, out: Path, progress: Progress, study_name: str, total_epochs: int) -> None:
        self.console, self.out, self.progress = console, out, progress
        self.study_task = progress.add_task(f"study {study_name}", total=total_epochs)
        self.completed = 0  # epochs of the runs finished or skipped
        self.labels: dict[str, tuple[str, int]] = {}
        self.tasks: dict[str, Any] = {}

    def skip(self, epochs: int) -> None:
        self.completed += epochs
        self.progress.update(self.study_task, completed=self.completed)

    def label(self, run: str, text: str, epochs: int) -> None:
        self.labels[run] = (text, epochs)

    def __call__(self, event: Event) -> None:
        text, epochs = self.labels.get(event.run, (event.run, 0))
        if event.kind == "start":
            self.tasks[event.run] = self.progress.add_task(text, total=event.data["total"])
        elif event.kind == "batch" and event.run in self.tasks:
            self.progress.update(self.tasks[event.run], completed=event.data["done"])
        elif event.kind == "epoch":
            row = event.data["row"]
            self.progress.update(self.study_task, completed=self.completed + row["epoch"])
            if event.run in self.tasks:
                self.progress.update(self.tasks[event.run], description=f"{text} val_acc {row['val_acc']:.3f}")
        elif event.kind == "panel" and event.run in self.tasks:
            self.progress.update(self.tasks[event.run], description=f"{text} robustness panel "
                                 f"{event.data['done']}/{event.data['total']} shifted sets")
        elif event.kind == "note":
            self.console.print(f"[yellow]{event.run}:[/] {escape(event.data['text'])}", highlight=False)
        elif event.kind == "done":
            if event.run in self.tasks:
                self.progress.remove_task(self.tasks.pop(event.run))
            self.skip(epochs)
            report_run(self.console, self.out, event.data["metrics"])
