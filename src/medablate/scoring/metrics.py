"""Clinical metrics from per-image predictions: point values with scikit-learn, bootstrap CIs vectorised.

Binary tasks treat class 1 as positive. Multi-class tasks report accuracy, balanced accuracy and macro
averages (one-vs-rest) with per-class values. The bootstrap resamples images within each class
(stratified), all resamples at once as a (resamples x images) weight matrix, so 2000 resamples of 1000
images take a fraction of a second; with unit weights every function reproduces scikit-learn exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse
from sklearn import metrics as skm

BINARY_KEYS = ["accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv",
               "f1", "brier", "ece"]
CALIBRATION_BINS = 10


def nan_to_none(value: float | np.floating) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Equal-width bins over the positive-class probability: sum over bins of |mean(y) - mean(p)| x share."""
    return float(weighted_binary(np.ones((1, len(y))), y, p, p >= 0.5, bins)["ece"][0])


def _unique_index(p: np.ndarray) -> tuple[np.ndarray, int]:
    values, inverse = np.unique(p, return_inverse=True)
    return inverse, len(values)


def weighted_binary(weights: np.ndarray, y: np.ndarray, p: np.ndarray, decisions: np.ndarray,
                    bins: int = CALIBRATION_BINS, calibration: bool = True) -> dict[str, np.ndarray]:
    """Every binary metric for each row of weights (resamples x images): image i counts weights[r, i] times
    (without calibration: no ECE and no PR AUC, the costly ones after the ROC AUC)."""
    w = np.asarray(weights, float)
    y, d, p = np.asarray(y).astype(bool), np.asarray(decisions).astype(bool), np.asarray(p, float)
    total = w.sum(1)
    tp, fn = w @ (y & d), w @ (y & ~d)
    tn, fp = w @ (~y & ~d), w @ (~y & d)
    out = {"accuracy": (tp + tn) / total, "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
           "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
           "brier": (w @ (p - y) ** 2) / total}
    out["balanced_accuracy"] = (out["sensitivity"] + out["specificity"]) / 2
    out["roc_auc"] = _weighted_auc(w, y, p)
    if not calibration:
        return out
    edges = np.minimum((p * bins).astype(int), bins - 1)
    per_bin = w @ sparse.csr_matrix(((p - y), (np.arange(len(p)), edges)), shape=(len(p), bins)).toarray()
    out["ece"] = np.abs(per_bin).sum(1) / total
    out["pr_auc"] = _weighted_average_precision(w, y, p)
    return out


def _class_weights_by_value(w: np.ndarray, mask: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """(resamples x unique scores): the weight of the masked images at each distinct score."""
    rows = np.flatnonzero(mask)
    onehot = sparse.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), index[rows])), shape=(len(rows), size))
    return np.asarray(w[:, rows] @ onehot)


def _weighted_auc(w: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Mann-Whitney form of the ROC AUC (ties count half), as roc_auc_score with sample weights."""
    index, size = _unique_index(p)
    positives = _class_weights_by_value(w, y, index, size)
    negatives = _class_weights_by_value(w, ~y, index, size)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(1) * negatives.sum(1)
    return _ratio((positives * (below + 0.5 * negatives)).sum(1), pairs)


def _weighted_average_precision(w: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Sum over distinct thresholds (high to low) of the recall gained times the precision there."""
    index, size = _unique_index(p)
    positives = _class_weights_by_value(w, y, index, size)[:, ::-1]
    negatives = _class_weights_by_value(w, ~y, index, size)[:, ::-1]
    tp, fp = np.cumsum(positives, axis=1), np.cumsum(negatives, axis=1)
    precision = _ratio(tp, tp + fp)
    gained = _ratio(positives, positives.sum(1, keepdims=True))
    return np.nansum(gained * np.nan_to_num(precision), axis=1) + np.where(positives.sum(1) > 0, 0, np.nan)


def binary_metrics(y: np.ndarray, p_positive: np.ndarray, decisions: np.ndarray) -> dict[str, Any]:
    """Point values with scikit-learn; AUCs are None (with a note) when only one class is present."""
    y, d = np.asarray(y, int), np.asarray(decisions, int)
    one_class = len(np.unique(y)) < 2
    tn, fp, fn, tp = skm.confusion_matrix(y, d, labels=[0, 1]).ravel()
    values: dict[str, Any] = {
        "accuracy": skm.accuracy_score(y, d),
        "balanced_accuracy": skm.balanced_accuracy_score(y, d) if not one_class else None,
        "roc_auc": None if one_class else skm.roc_auc_score(y, p_positive),
        "pr_auc": None if one_class else skm.average_precision_score(y, p_positive),
        "sensitivity": skm.recall_score(y, d, zero_division=np.nan) if tp + fn else None,
        "specificity": skm.recall_score(y, d, pos_label=0, zero_division=np.nan) if tn + fp else None,
        "ppv": skm.precision_score(y, d, zero_division=np.nan) if tp + fp else None,
        "npv": skm.precision_score(y, d, pos_label=0, zero_division=np.nan) if tn + fn else None,
        "f1": skm.f1_score(y, d, zero_division=np.nan) if 2 * tp + fp + fn else None,
        "brier": skm.brier_score_loss(y, p_positive, pos_label=1),
        "ece": expected_calibration_error(y, p_positive),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
        "count": int(len(y)),
    }
    if one_class:
        values["note"] = "only one class present: AUCs and the other class's rates are undefined"
    return {k: (nan_to_none(v) if isinstance(v, (float, np.floating)) else v) for k, v in values.items()}


def multiclass_metrics(y: np.ndarray, probabilities: np.ndarray, decisions: np.ndarray,
                       class_names: list[str]) -> dict[str, Any]:
    y, d = np.asarray(y, int), np.asarray(decisions, int)
    per_class = {name: binary_metrics(y == c, probabilities[:, c], d == c) for c, name in enumerate(class_names)}
    macro = {k: _mean([per_class[n][k] for n in class_names]) for k in ("roc_auc", "pr_auc", "sensitivity",
                                                                        "specificity", "ppv", "npv", "f1")}
    labels = list(range(len(class_names)))
    present = len(np.unique(y)) == len(class_names)
    return {"accuracy": float(skm.accuracy_score(y, d)), "balanced_accuracy": float(skm.balanced_accuracy_score(y, d)),
            "roc_auc": float(skm.roc_auc_score(y, probabilities, multi_class="ovr", labels=labels)) if present else None,
            **{f"macro_{k}": v for k, v in macro.items() if k != "roc_auc"},
            "confusion_matrix": skm.confusion_matrix(y, d, labels=labels).tolist(), "count": int(len(y)),
            "per_class": per_class}


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if len(present) == len(values) else None


KEPT_BYTES = 2**25  # bootstrap counts up to 32 MiB (2000 resamples of 2,000 images) are kept for the next call


def stratified_weights(y: np.ndarray, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples x images) counts: each resample draws each class's images with replacement, class sizes kept.
    Read-only: the same classes give the same counts, so the last few (up to KEPT_BYTES each) are kept for the next
    call (a study scores every run, and each trial's ensemble, on the same validation and test images)."""
    classes = np.unique(np.asarray(y), return_inverse=True)[1].astype(np.int64)  # 0/1 and False/True alike
    if resamples * len(classes) * 8 > KEPT_BYTES:
        return _stratified_weights(classes.tobytes(), resamples, seed)
    return _kept_weights(classes.tobytes(), resamples, seed)


def _stratified_weights(classes: bytes, resamples: int, seed: int) -> np.ndarray:
    y = np.frombuffer(classes, dtype=np.int64)
    rng = np.random.default_rng(seed)
    weights = np.zeros((resamples, len(y)))
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        weights[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=resamples)
    weights.setflags(write=False)
    return weights


_kept_weights = functools.lru_cache(maxsize=4)(_stratified_weights)


def bootstrap_intervals(y: np.ndarray, p_positive: np.ndarray, decisions: np.ndarray, resamples: int = 2000,
                        seed: int = 0, confidence: float = 0.95) -> dict[str, list[float | None]]:
    """Percentile CIs of every binary metric, resampling images within each class."""
    values = weighted_binary(stratified_weights(np.asarray(y), resamples, seed), y, p_positive, decisions)
    return percentile_intervals(values, BINARY_KEYS, confidence)


def percentile_intervals(values: dict[str, np.ndarray], keys: Sequence[str],
                         confidence: float = 0.95) -> dict[str, list[float | None]]:
    """Each metric's percentile interval over its resamples; [None, None] where over a tenth of them are undefined."""
    tail = (1 - confidence) / 2 * 100
    out: dict[str, list[float | None]] = {}
    for key in keys:
        finite = values[key][np.isfinite(values[key])]
        out[key] = [None, None] if len(finite) < len(values[key]) * 0.9 or len(finite) == 0 else \
            [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]
    return out
