"""A run's own figures and example images, drawn from its folder, never on the training path: curves.png, roc.png,
pr.png, reliability.png, confusion.png and examples/ with examples.json.

figures.json records the metrics.json they were drawn from, so a rerun draws only what is missing or stale (a
run re-evaluated with another threshold, or one whose drawing a kill cut short). Several runs are drawn in
parallel by spawned processes, one torch thread each: once the runs are trained, or (a study with spare cores,
such as one training on a GPU) by its helper processes while the next runs train, each as soon as the process
that trained it has let it go.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from medablate.core import faults
from medablate.core.children import process_pool
from medablate.data.sources.phantom import FIGURE_NOTE
from medablate.execute.prepare import RunContext, data_note
from medablate.folder import claims, layout, rundir
from medablate.folder.records import EvaluationReport, FiguresRecord, RunRecord
from medablate.inspect.predict import write_examples
from medablate.report import plots

if TYPE_CHECKING:
    from medablate.data.types import ImageSet

_tests: dict[int, ImageSet | None] = {}  # the study's test images at each image size, in a drawing process


def _drawn_from(run_dir: Path) -> str | None:
    path = run_dir / rundir.METRICS_JSON
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.exists() else None


def current(run_dir: Path) -> bool:
    """Whether the run's figures were drawn from its metrics.json as it is now (True when there is nothing to draw)."""
    wanted = _drawn_from(run_dir)
    if wanted is None:
        return True
    drawn = rundir.read_figures(run_dir)
    return drawn is not None and drawn.metrics_sha1 == wanted


def draw(run_dir: Path, title: str, note: str, test: ImageSet | None = None, size: int | None = None) -> None:
    """Every figure of one run, then figures.json (examples from `test`, or in a drawing process from the study's
    test images at the run's image size)."""
    test = test if test is not None else _tests.get(size) if size is not None else None
    wanted = _drawn_from(run_dir)
    metrics = rundir.finished_metrics(run_dir)
    faults.point("before-run-figures")
    history = rundir.read_history(run_dir)
    if history:
        plots.run_curves(run_dir / layout.CURVES_PNG, history, title, note)
    if metrics and metrics.evaluation:
        trial_figures(run_dir, metrics, metrics.evaluation, title, note)
        if test is not None:
            write_examples(run_dir, test.images, test.labels, test.ids, metrics.threshold)
    rundir.write_figures(run_dir, FiguresRecord(metrics_sha1=wanted))


def draw_in_task(run_dir: Path, title: str, context: RunContext) -> None:
    """A task's run is written (Slurm): its figures and examples, drawn there and then (the driver skips them)."""
    note = FIGURE_NOTE if data_note(context.data) == "synthetic phantom" else ""
    draw(run_dir, title, note, context.data.test)


def trial_figures(run_dir: Path, metrics: RunRecord, evaluation: EvaluationReport, title: str, note: str) -> None:
    """ROC, PR, confusion matrix and reliability diagram of one trial, from its prediction files."""
    curves = rundir.positive_curves(run_dir, evaluation.positive_class)
    threshold = metrics.threshold
    if curves:
        plots.roc_pr(run_dir / layout.ROC_PNG, run_dir / layout.PR_PNG, curves, threshold, title, note)
        plots.reliability(run_dir / layout.RELIABILITY_PNG, curves, f"{title}: calibration", note=note)
    shown = "test" if evaluation.test else "val"
    section = evaluation.test or evaluation.val
    if section is None:
        return
    scores = section.at_threshold or section.at_rule
    rule = f"threshold {threshold:.3g}" if section.at_threshold and threshold is not None else "the loss's rule"
    names = (metrics.test.class_names if metrics.test else []) or [str(i) for i in range(len(scores.confusion_matrix))]
    plots.confusion(run_dir / layout.CONFUSION_PNG, scores.confusion_matrix, names, f"{shown}, {rule}", note)


def start(tests: dict[int, ImageSet | None], parent: int) -> None:
    """A drawing process's initializer: the study's test images (for the runs' examples), one torch thread."""
    global _tests
    import torch

    _tests = tests
    os.environ[faults.HELPER_OF] = str(parent)  # a fault point here stands for the whole machine dying
    torch.set_num_threads(1)


# Measured on the 2-core CI machine: a spawned drawing process needs about 8 s to start (it imports torch and
# matplotlib), one run's figures and examples about 2 s to draw. A pool pays only when it saves more than it costs.
SPAWN_SECONDS, SECONDS_PER_RUN = 8.0, 2.0
PROCESSES_VARIABLE = "MEDABLATE_FIGURE_PROCESSES"  # a number of drawing processes, to override that choice


def forced_processes() -> int | None:
    """The number of drawing processes $MEDABLATE_FIGURE_PROCESSES asks for (None where it is unset)."""
    forced = os.environ.get(PROCESSES_VARIABLE, "").strip()
    return int(forced) if forced.isdigit() else None


def pool_size(runs: int, cores: int) -> int:
    """How many processes should draw `runs` runs' figures on `cores` cores: 1 (here) unless a pool is quicker."""
    forced = forced_processes()
    if forced:
        return forced
    saved = runs * SECONDS_PER_RUN * (1 - 1 / max(1, cores))
    return cores if saved > SPAWN_SECONDS else 1


def draw_all(runs: list[tuple[Path, str, int]], note: str, tests: dict[int, ImageSet | None],
             processes: int = 1, helpers: Helpers | None = None) -> int:
    """Draw every run of (folder, title, image size) whose figures are not current, its examples from `tests` at its
    size; how many were drawn. By a study's helpers where given, else, with processes > 1, in up to that many
    spawned processes when that is quicker (pool_size; the caller's script must guard its entry point, as for any
    spawned process)."""
    todo = [(d, t, s) for d, t, s in runs if not current(d)]
    if helpers is not None:
        for future in [helpers.draw(d, t, note, s, tests) for d, t, s in todo]:
            future.result()
        return len(todo)
    processes = pool_size(len(todo), processes) if processes > 1 else 1
    if processes <= 1 or len(todo) <= 1:
        for run_dir, title, size in todo:
            draw(run_dir, title, note, tests.get(size))
        return len(todo)
    with process_pool(min(processes, len(todo)), start, (tests, os.getpid()), grace=1.0) as pool:
        for future in [pool.submit(draw, d, t, note, None, s) for d, t, s in todo]:
            future.result()
    return len(todo)


class Helpers:
    """A study's helper processes, each holding the study's test images at its image size: they draw each run's
    figures while the runs train (`watch`), then the rest, the analysis's ensembles and figures (`pool`)."""

    def __init__(self, pool: ProcessPoolExecutor, size: int) -> None:
        self.pool, self.size = pool, size

    @classmethod
    @contextmanager
    def started(cls, count: int, test: ImageSet | None, size: int) -> Iterator[Helpers]:
        """`count` helpers for as long as the block runs (stopped at once when it fails)."""
        with process_pool(count, start, ({size: test}, os.getpid()), grace=1.0) as pool:
            yield cls(pool, size)

    def draw(self, run_dir: Path, title: str, note: str, size: int, tests: dict[int, ImageSet | None]) -> Future:
        """One run's figures; its examples from the helper's own copy of the test images where the size is the
        study's, else from `tests` (sent along)."""
        return self.pool.submit(draw, run_dir, title, note, None if size == self.size else tests.get(size), size)

    def watch(self, runs: list[tuple[Path, str, int]], note: str) -> Watcher:
        return Watcher(self, runs, note)


class Watcher:
    """While the runs train: a thread that hands each run whose record is written and whose claim is released
    (every file of it is final) to the helpers, at most once. Leaving it waits for what it handed over."""

    SECONDS = 1.0

    def __init__(self, helpers: Helpers, runs: list[tuple[Path, str, int]], note: str) -> None:
        self.helpers, self.runs, self.note = helpers, [r for r in runs if r[2] == helpers.size], note
        self.handed: dict[Path, Future] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="medablate-run-figures")

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *failed: object) -> None:
        self._stop.set()
        self._thread.join()
        if failed[0] is None:
            for future in self.handed.values():
                future.result()  # a drawing's error surfaces here, as it would after the runs

    def _watch(self) -> None:
        while not self._stop.wait(self.SECONDS):
            self.hand_over()

    def hand_over(self) -> None:
        for run_dir, title, size in self.runs:
            if run_dir in self.handed or self._stop.is_set():
                continue
            if not (run_dir / rundir.METRICS_JSON).exists() or claims.holder(run_dir) is not None:
                continue
            if rundir.finished_metrics(run_dir) is not None and not current(run_dir):
                self.handed[run_dir] = self.helpers.draw(run_dir, title, self.note, size, {})
