"""Validation and test metrics of a trained trial, at the course's 0.5 rule and at the validated threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from medablate.config.schema import EvaluationConfig
from medablate.scoring import metrics, thresholds


@dataclass
class Predictions:
    labels: np.ndarray
    probabilities: np.ndarray  # (N, classes)
    decisions: np.ndarray  # at the loss's own rule (sigmoid > 0.5 / argmax)

    @property
    def positive(self) -> np.ndarray:
        return self.probabilities[:, 1]


def epoch_metrics(labels: np.ndarray, probabilities: np.ndarray, decisions: np.ndarray) -> dict[str, float]:
    """The cheap validation metrics recorded every epoch (NaN where undefined)."""
    y = np.asarray(labels)
    if len(np.unique(y)) < 2 or not np.isfinite(probabilities).all():  # one class, or a diverged model
        return {"val_auc": np.nan, "val_balanced_acc": np.nan, "val_sensitivity": np.nan, "val_specificity": np.nan}
    if probabilities.shape[1] == 2:
        values = metrics.weighted_binary(np.ones((1, len(y))), y == 1, probabilities[:, 1], decisions == 1)
        return {"val_auc": float(values["roc_auc"][0]), "val_balanced_acc": float(values["balanced_accuracy"][0]),
                "val_sensitivity": float(values["sensitivity"][0]), "val_specificity": float(values["specificity"][0])}
    return {"val_auc": float(skm.roc_auc_score(y, probabilities, multi_class="ovr",
                                               labels=list(range(probabilities.shape[1])))),
            "val_balanced_acc": float(skm.balanced_accuracy_score(y, decisions)),
            "val_sensitivity": np.nan, "val_specificity": np.nan}


def _at(predictions: Predictions, decisions: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    if predictions.probabilities.shape[1] == 2:
        return metrics.binary_metrics(predictions.labels, predictions.positive, decisions)
    return metrics.multiclass_metrics(predictions.labels, predictions.probabilities, decisions, class_names)


def evaluate_trial(val: Predictions, test: Predictions | None, config: EvaluationConfig,
                   class_names: list[str]) -> tuple[dict[str, Any], float | None]:
    """metrics.json's 'evaluation' section and the chosen threshold (None for multi-class tasks)."""
    binary = val.probabilities.shape[1] == 2
    report: dict[str, Any] = {"positive_class": class_names[1] if binary else None}
    threshold = thresholds.choose_threshold(config.rule, val.labels, val.positive) if binary else None
    if binary:
        report["threshold"] = {"rule": config.rule, "value": threshold, "chosen_on": "validation",
                               "description": thresholds.describe(config.rule),
                               "decision": "positive when P(positive) >= threshold"}
    for name, predictions in (("val", val), ("test", test)):
        if predictions is not None:
            report[name] = score(predictions, threshold, class_names,
                                 config.bootstrap_resamples if name == "test" else None)
    return report, threshold


def score(predictions: Predictions, threshold: float | None, class_names: list[str],
          resamples: int | None = None) -> dict[str, Any]:
    """Every metric at the loss's rule ('at_0.5') and, for binary tasks, at the threshold ('at_threshold');
    with resamples, 95% bootstrap CIs (images resampled within each class)."""
    section = {"at_0.5": _at(predictions, predictions.decisions, class_names)}
    if predictions.probabilities.shape[1] != 2 or threshold is None:
        return section
    decided = (predictions.positive >= threshold).astype(int)
    section["at_threshold"] = _at(predictions, decided, class_names)
    if resamples:
        for key, decisions in (("at_0.5", predictions.decisions), ("at_threshold", decided)):
            section[key]["ci95"] = metrics.bootstrap_intervals(predictions.labels == 1, predictions.positive,
                                                               decisions == 1, resamples)
    return section
