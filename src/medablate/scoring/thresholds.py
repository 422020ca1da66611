"""The operating threshold, chosen on validation predictions only and applied unchanged to test."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from medablate.errors import UserError
from medablate.scoring import metrics


def describe(rule: Any) -> str:
    if isinstance(rule, dict) and "prevalence" in rule:
        return (f"maximises the expected accuracy where {rule['prevalence']:g} of the images are positive "
                "(validation sensitivity and specificity weighted by that prevalence)")
    if isinstance(rule, dict) and "specificity" in rule:
        return f"lowest threshold keeping validation specificity >= {rule['specificity']}"
    if isinstance(rule, dict):
        return f"highest threshold keeping validation sensitivity >= {rule['sensitivity']}"
    return "maximises validation sensitivity + specificity - 1 (Youden)" if rule == "youden" else f"fixed at {rule}"


def choose_threshold(rule: Any, y_val: np.ndarray, p_val: np.ndarray) -> float:
    """0.5 (or any number): as given; 'youden': argmax of TPR - FPR; {sensitivity: s}: the highest threshold
    whose validation sensitivity is at least s; {specificity: s}: the lowest threshold whose validation specificity
    is at least s (the most sensitive one that keeps it); {prevalence: q}: argmax of q TPR + (1 - q)(1 - FPR), the
    accuracy expected where a share q of the images is positive (q = 0.5 is Youden's rule). Decisions are then
    p_positive >= threshold."""
    if isinstance(rule, (int, float)):
        return float(rule)
    if len(np.unique(y_val)) < 2:
        raise UserError(f"the validation set has only one class, so the threshold rule '{rule}' cannot be applied: "
                        "use evaluation.threshold: 0.5 or a split with both classes in validation.")
    y = np.asarray(y_val).astype(bool)
    candidates, tpr, fpr = _roc_points(y, np.asarray(p_val, float), np.ones((1, len(y))))
    return float(min(candidates[_pick(rule, tpr, fpr)[0]], 1.0))


def _pick(rule: Any, tpr: np.ndarray, fpr: np.ndarray) -> np.ndarray:
    """The index the rule picks in each row of ROC points (rows: resamples; columns: thresholds high to low)."""
    if rule == "youden":
        return np.argmax(tpr - fpr, axis=1)
    if "prevalence" in rule:
        q = float(rule["prevalence"])
        return np.argmax(q * tpr - (1 - q) * fpr, axis=1)
    if "specificity" in rule:
        keeps = fpr <= 1 - float(rule["specificity"]) + 1e-12
        return keeps.shape[1] - 1 - np.argmax(keeps[:, ::-1], axis=1)  # the last point that keeps it
    return np.argmax(tpr >= float(rule["sensitivity"]) - 1e-12, axis=1)  # the first point that reaches it


def interval(rule: Any, y_val: np.ndarray, p_val: np.ndarray, resamples: int, seed: int = 0,
             confidence: float = 0.95) -> list[float] | None:
    """The percentile bootstrap interval of the threshold the rule chooses, validation images resampled within each
    class (all resamples at once); None for a fixed threshold or a validation set with one class."""
    y = np.asarray(y_val).astype(bool)
    if isinstance(rule, (int, float)) or y.all() or not y.any():
        return None
    candidates, tpr, fpr = _roc_points(y, np.asarray(p_val, float), metrics.stratified_weights(y, resamples, seed))
    chosen = np.minimum(candidates[_pick(rule, tpr, fpr)], 1.0)
    tail = (1 - confidence) / 2 * 100
    return [float(np.percentile(chosen, tail)), float(np.percentile(chosen, 100 - tail))]


def _roc_points(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every threshold worth trying (inf, then each distinct score high to low) and the sensitivity (TPR) and
    1 - specificity (FPR) there, for each row of weights (resamples x images; image i counts weights[r, i] times).
    roc_curve's points without its dropping of collinear ones, so a target is met at the highest threshold."""
    values = np.unique(p)[::-1]
    index = np.searchsorted(-values, -p)  # each image's place among the distinct scores
    positives = _per_value(weights[:, y], index[y], len(values))
    negatives = _per_value(weights[:, ~y], index[~y], len(values))
    zero = np.zeros((len(weights), 1))  # above every score: nothing positive
    tpr = np.hstack([zero, np.cumsum(positives, axis=1) / positives.sum(1, keepdims=True)])
    fpr = np.hstack([zero, np.cumsum(negatives, axis=1) / negatives.sum(1, keepdims=True)])
    return np.concatenate([[np.inf], values]), tpr, fpr


def _per_value(weights: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """(resamples x thresholds): the resampled count of images whose score is each candidate value."""
    onehot = sparse.csr_matrix((np.ones(len(index)), (np.arange(len(index)), index)), shape=(len(index), size))
    return np.asarray((onehot.T @ weights.T).T)
