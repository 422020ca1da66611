"""What each run is judged on: outcomes read from its saved files (metrics.json, history.csv)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medablate.analysis import stats
from medablate.config.schema import AnalysisConfig
from medablate.folder import rundir
from medablate.folder.records import RunRecord


@dataclass(frozen=True)
class Outcome:
    key: str
    label: str  # as it reads in a sentence
    higher_is_better: bool
    unit: str  # "points" (accuracy x 100), "epochs", "s" or "" (a loss)
    untested_because: str = ""  # set: reported descriptively, never in a test family
    bounds: tuple[float, float] = (0.0, math.inf)  # the values a run's outcome can take

    @property
    def difference_bounds(self) -> tuple[float, float]:
        """The values a difference of two runs' outcomes can take."""
        return (self.bounds[0] - self.bounds[1], self.bounds[1] - self.bounds[0])


OUTCOMES = [
    Outcome("test_acc", "test accuracy", True, "points", bounds=(0.0, 1.0)),
    Outcome("test_loss", "test loss", False, ""),
    Outcome("test_auc", "test ROC AUC", True, "", bounds=(0.0, 1.0)),
    Outcome("test_decision_acc", "test accuracy at the decision threshold", True, "points", bounds=(0.0, 1.0)),
    Outcome("test_sensitivity", "test sensitivity at the decision threshold", True, "points", bounds=(0.0, 1.0)),
    Outcome("test_specificity", "test specificity at the decision threshold", True, "points", bounds=(0.0, 1.0)),
    Outcome("robust_acc", "accuracy under shift (mean over the robustness panel)", True, "points", bounds=(0.0, 1.0)),
    Outcome("robust_auc", "ROC AUC under shift (mean over the robustness panel)", True, "", bounds=(0.0, 1.0)),
    Outcome("val_acc", "validation accuracy (of the checkpoint used)", True, "points", bounds=(0.0, 1.0)),
    Outcome("highest_val_acc", "highest validation accuracy at any epoch", True, "points",
            untested_because="the epoch is picked by looking at validation, so it is optimistic", bounds=(0.0, 1.0)),
    Outcome("val_loss_at_best", "validation loss at the best epoch", False, ""),
    Outcome("best_epoch", "best epoch", False, "epochs", bounds=(1.0, math.inf)),
    Outcome("convergence_epoch", "epochs to converge", False, "epochs", bounds=(1.0, math.inf)),
    Outcome("stability", "validation-accuracy SD over the last epochs", False, "points", bounds=(0.0, 1.0)),
    Outcome("seconds", "training time", False, "s", untested_because="it depends on machine load, not on the factor"),
]
BY_KEY = {o.key: o for o in OUTCOMES}
TEST_OVER_TRAIN = "test_over_train"  # kfold: the run's validation / training images (not an outcome)


def is_tested(outcome: Outcome) -> bool:
    return not outcome.untested_because


def run_outcomes(run_dir: Path, analysis: AnalysisConfig) -> dict[str, float] | None:
    """The outcomes of one finished run, or None when it has not finished (or diverged/failed)."""
    metrics = rundir.finished_metrics(run_dir)
    if not metrics:
        return None
    history = rundir.read_history(run_dir)
    val_acc = [row["val_acc"] for row in history]
    test = metrics.test
    values: dict[str, Any] = {
        "test_acc": test.accuracy if test else None, "test_loss": test.loss if test else None,
        "test_auc": _test_auc(metrics),
        **_at_decision(metrics),
        "robust_acc": metrics.robustness.robust_acc if metrics.robustness else None,
        "robust_auc": metrics.robustness.robust_auc if metrics.robustness else None,
        "val_acc": rundir.checkpoint_val_acc(metrics, history), "highest_val_acc": rundir.highest_val_acc(metrics),
        "val_loss_at_best": metrics.best_val_loss,
        "best_epoch": metrics.best_epoch,
        "convergence_epoch": stats.convergence_epoch(val_acc, analysis.convergence_fraction),
        "stability": stats.stability(val_acc, analysis.stability_epochs),
        "seconds": metrics.seconds,
        TEST_OVER_TRAIN: metrics.val_images / metrics.train_images if metrics.val_images and metrics.train_images
        else None,
    }
    return {k: float(v) if v is not None else math.nan for k, v in values.items()}


def _test_auc(metrics: RunRecord) -> float | None:
    """The ROC AUC on the test set (threshold-free; macro one-vs-rest with more than two classes)."""
    test = metrics.evaluation.test if metrics.evaluation else None
    return test.at_rule.roc_auc if test else None


def _at_decision(metrics: RunRecord) -> dict[str, float | None]:
    """Test accuracy, sensitivity and specificity at the run's decision: the threshold its rule chose (two classes;
    what evaluation.threshold and its comparisons change), else the loss's rule with macro averages."""
    test = metrics.evaluation.test if metrics.evaluation else None
    scores = (test.at_threshold or test.at_rule) if test else None
    if scores is None:
        return {"test_decision_acc": None, "test_sensitivity": None, "test_specificity": None}
    return {"test_decision_acc": scores.accuracy,
            "test_sensitivity": scores.macro_sensitivity if scores.sensitivity is None else scores.sensitivity,
            "test_specificity": scores.macro_specificity if scores.specificity is None else scores.specificity}


def scaled(outcome: Outcome, value: float) -> float:
    """Accuracy-like outcomes are shown in points (x 100)."""
    return value * 100 if outcome.unit == "points" else value
