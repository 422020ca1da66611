"""A run's own figures and example images, drawn from its folder once the runs are trained, never on the
training path: curves.png, roc.png, pr.png, reliability.png, confusion.png and examples/ with examples.json.

figures.json records the metrics.json they were drawn from, so a rerun draws only what is missing or stale (a
run re-evaluated with another threshold, or one whose drawing a kill cut short). Several runs are drawn in
parallel by spawned processes, one torch thread each.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medablate.core import atomic, faults
from medablate.core.children import process_pool
from medablate.folder import rundir
from medablate.inspect.predict import write_examples
from medablate.report import plots

if TYPE_CHECKING:
    from medablate.data.types import ImageSet

_test: ImageSet | None = None  # the study's test images, in a drawing process


def _drawn_from(run_dir: Path) -> str | None:
    path = run_dir / rundir.METRICS_JSON
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.exists() else None


def current(run_dir: Path) -> bool:
    """Whether the run's figures were drawn from its metrics.json as it is now (True when there is nothing to draw)."""
    wanted = _drawn_from(run_dir)
    if wanted is None:
        return True
    try:
        return (rundir.read_json(run_dir / rundir.FIGURES_JSON) or {}).get("metrics_sha1") == wanted
    except Exception:
        return False


def draw(run_dir: Path, title: str, note: str, test: ImageSet | None = None) -> None:
    """Every figure of one run, then figures.json."""

    test = test if test is not None else _test
    wanted = _drawn_from(run_dir)
    metrics = rundir.finished_metrics(run_dir)
    faults.point("before-run-figures")
    history = rundir.read_history(run_dir)
    if history:
        plots.run_curves(run_dir / "curves.png", history, title, note)
    if metrics.get("evaluation"):
        trial_figures(run_dir, metrics, title, note)
        if test is not None:
            write_examples(run_dir, test.images, test.labels, test.ids, metrics.get("threshold"))
    atomic.write_json(run_dir / rundir.FIGURES_JSON, {"metrics_sha1": wanted})


def trial_figures(run_dir: Path, metrics: dict[str, Any], title: str, note: str) -> None:
    """ROC, PR, confusion matrix and reliability diagram of one trial, from its prediction files."""
    curves = rundir.positive_curves(run_dir, metrics["evaluation"].get("positive_class"))
    threshold = metrics.get("threshold")
    if curves:
        plots.roc_pr(run_dir / "roc.png", run_dir / "pr.png", curves, threshold, title, note)
        plots.reliability(run_dir / "reliability.png", curves, f"{title}: calibration", note=note)
    shown = "test" if "test" in metrics["evaluation"] else "val"
    section = metrics["evaluation"][shown]
    at = "at_threshold" if "at_threshold" in section else "at_0.5"
    rule = f"threshold {threshold:.3g}" if at == "at_threshold" else "the loss's rule"
    names = (metrics.get("test") or {}).get("class_names") or [str(i) for i in range(len(section[at]["confusion_matrix"]))]
    plots.confusion(run_dir / "confusion.png", section[at]["confusion_matrix"], names, f"{shown}, {rule}", note)


def _start(test: ImageSet | None, parent: int) -> None:
    global _test
    import torch

    _test = test
    os.environ[faults.HELPER_OF] = str(parent)  # a fault point here stands for the whole machine dying
    torch.set_num_threads(1)


def draw_all(runs: list[tuple[Path, str]], note: str, test: ImageSet | None, processes: int = 1) -> int:
    """Draw every run of (folder, title) whose figures are not current; how many were drawn. processes > 1 draws
    them in spawned processes (the caller's script must guard its entry point, as for any spawned process)."""
    todo = [(d, t) for d, t in runs if not current(d)]
    if processes <= 1 or len(todo) <= 1:
        for run_dir, title in todo:
            draw(run_dir, title, note, test)
        return len(todo)
    with process_pool(min(processes, len(todo)), _start, (test, os.getpid()), grace=1.0) as pool:
        for future in [pool.submit(draw, d, t, note) for d, t in todo]:
            future.result()
    return len(todo)
