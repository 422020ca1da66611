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
                               "ci95": thresholds.interval(config.rule, val.labels == 1, val.positive,
                                                          config.bootstrap_resamples),
                               "description": thresholds.describe(config.rule),
                               "decision": "positive when P(positive) >= threshold"}
    for name, predictions in (("val", val), ("test", test)):
        if predictions is not None:
            report[name] = score(predictions, threshold, class_names, config.bootstrap_resamples,
                                 at_rule=name == "test")
    return report, threshold


def score(predictions: Predictions, threshold: float | None, class_names: list[str],
          resamples: int | None = None, at_rule: bool = True) -> dict[str, Any]:
    """Every metric at the loss's rule ('at_0.5') and, for binary tasks, at the threshold ('at_threshold');
    with resamples, 95% bootstrap CIs (images resampled within each class): at the threshold, and at the loss's
    rule too unless at_rule is False (validation: the interval that matters there is the threshold's)."""
    section = {"at_0.5": _at(predictions, predictions.decisions, class_names)}
    if predictions.probabilities.shape[1] != 2 or threshold is None:
        return section
    decided = decide(predictions, threshold)
    section["at_threshold"] = _at(predictions, decided, class_names)
    if resamples:
        for key, decisions in (("at_0.5", predictions.decisions), ("at_threshold", decided)):
            if key == "at_threshold" or at_rule:
                section[key]["ci95"] = metrics.bootstrap_intervals(predictions.labels == 1, predictions.positive,
                                                                   decisions == 1, resamples)
    return section


def decide(predictions: Predictions, threshold: float | None) -> np.ndarray:
    """The run's decisions: P(positive) >= the validated threshold (two classes), else the loss's own rule."""
    if threshold is None or predictions.probabilities.shape[1] != 2:
        return predictions.decisions
    return (predictions.positive >= threshold).astype(int)


@dataclass
class Shifted:
    """A split's predictions under one shift of the robustness panel at one severity (0: the clean images)."""

    name: str
    only_class: str | None
    severity: int
    level: float | None  # the shift's parameter at this severity (None at 0)
    predictions: Predictions

    @property
    def label(self) -> str:
        return self.name if self.only_class is None else f"{self.name} ({self.only_class} only)"


PANEL_INTERVALS = ("accuracy", "roc_auc", "sensitivity", "specificity")
CLEAN = "clean"  # the panel's row of the unshifted images (severity 0), the start of every shift's curve


def robustness_rows(panel: list[Shifted], threshold: float | None, class_names: list[str],
                    resamples: int) -> list[dict[str, Any]]:
    """A row per shift and severity: the metrics at the run's decision, as on the clean split, with 95% bootstrap
    CIs of accuracy, ROC AUC, sensitivity and specificity (two classes; the same resamples for every shifted set,
    since the images and labels are the same: the sets are paired)."""
    rows = []
    weights = None
    for shifted in panel:
        p = shifted.predictions
        decided = decide(p, threshold)
        row: dict[str, Any] = {"shift": shifted.label, "name": shifted.name, "only_class": shifted.only_class or "",
                               "severity": shifted.severity, "level": shifted.level, "count": len(p.labels)}
        if p.probabilities.shape[1] != 2:
            found = metrics.multiclass_metrics(p.labels, p.probabilities, decided, class_names)
            rows.append(row | {"accuracy": found["accuracy"], "roc_auc": found["roc_auc"],
                               "balanced_accuracy": found["balanced_accuracy"]})
            continue
        y, positive = p.labels == 1, p.positive
        point = metrics.weighted_binary(np.ones((1, len(y))), y, positive, decided == 1)  # sklearn's values exactly
        row |= {k: metrics.nan_to_none(point[k][0]) for k in metrics.BINARY_KEYS}
        weights = metrics.stratified_weights(y, resamples) if weights is None else weights
        spread = metrics.weighted_binary(weights, y, positive, decided == 1, calibration=False)
        for key, (low, high) in metrics.percentile_intervals(spread, PANEL_INTERVALS).items():
            row[f"{key}_low"], row[f"{key}_high"] = low, high
        rows.append(row)
    return rows


def robust_means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """robust_acc and robust_auc: the mean accuracy and ROC AUC over every shift and severity above 0."""
    shifted = [r for r in rows if r["severity"] > 0]

    def mean(key: str) -> float | None:
        values = [r.get(key) for r in shifted]
        return float(np.mean([float(v) for v in values if v is not None])) if values and None not in values else None

    return {"robust_acc": mean("accuracy"), "robust_auc": mean("roc_auc"), "shifted_sets": len(shifted)}
