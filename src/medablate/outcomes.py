"""What each run is judged on: outcomes read from its saved files (metrics.json, history.csv)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medablate import rundir, stats
from medablate.config import AnalysisConfig


@dataclass(frozen=True)
class Outcome:
    key: str
    label: str  # as it reads in a sentence
    higher_is_better: bool
    unit: str  # "points" (accuracy x 100), "epochs", "s" or "" (a loss)
    untested_because: str = ""  # set: reported descriptively, never in a test family


OUTCOMES = [
    Outcome("test_acc", "test accuracy", True, "points"),
    Outcome("test_loss", "test loss", False, ""),
    Outcome("val_acc", "validation accuracy (of the checkpoint used)", True, "points"),
    Outcome("highest_val_acc", "highest validation accuracy at any epoch", True, "points",
            untested_because="the epoch is picked by looking at validation, so it is optimistic"),
    Outcome("val_loss_at_best", "validation loss at the best epoch", False, ""),
    Outcome("best_epoch", "best epoch", False, "epochs"),
    Outcome("convergence_epoch", "epochs to converge", False, "epochs"),
    Outcome("stability", "validation-accuracy SD over the last epochs", False, "points"),
    Outcome("seconds", "training time", False, "s", untested_because="it depends on machine load, not on the factor"),
]
BY_KEY = {o.key: o for o in OUTCOMES}


def is_tested(outcome: Outcome) -> bool:
    return not outcome.untested_because


def run_outcomes(run_dir: Path, analysis: AnalysisConfig) -> dict[str, float] | None:
    """The outcomes of one finished run, or None when it has not finished (or diverged/failed)."""
    metrics = rundir.metrics_or_empty(run_dir)
    if not metrics or metrics.get("status") != rundir.DONE:
        return None
    history = rundir.read_history(run_dir)
    val_acc = [row["val_acc"] for row in history]
    test = metrics.get("test") or {}
    values: dict[str, Any] = {
        "test_acc": test.get("accuracy"), "test_loss": test.get("loss"),
        "val_acc": rundir.checkpoint_val_acc(metrics, history), "highest_val_acc": rundir.highest_val_acc(metrics),
        "val_loss_at_best": metrics.get("best_val_loss"),
        "best_epoch": metrics.get("best_epoch"),
        "convergence_epoch": stats.convergence_epoch(val_acc, analysis.convergence_fraction),
        "stability": stats.stability(val_acc, analysis.stability_epochs),
        "seconds": metrics.get("seconds"),
    }
    return {k: float(v) if v is not None else math.nan for k, v in values.items()}


def scaled(outcome: Outcome, value: float) -> float:
    """Accuracy-like outcomes are shown in points (x 100)."""
    return value * 100 if outcome.unit == "points" else value
