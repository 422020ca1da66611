"""The operating threshold, chosen on validation predictions only and applied unchanged to test."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from medablate.errors import UserError


def describe(rule: Any) -> str:
    if isinstance(rule, dict) and "specificity" in rule:
        return f"lowest threshold keeping validation specificity >= {rule['specificity']}"
    if isinstance(rule, dict):
        return f"highest threshold keeping validation sensitivity >= {rule['sensitivity']}"
    return "maximises validation sensitivity + specificity - 1 (Youden)" if rule == "youden" else f"fixed at {rule}"


def choose_threshold(rule: Any, y_val: np.ndarray, p_val: np.ndarray) -> float:
    """0.5 (or any number): as given; 'youden': argmax of TPR - FPR; {sensitivity: s}: the highest threshold
    whose validation sensitivity is at least s; {specificity: s}: the lowest threshold whose validation specificity
    is at least s (the most sensitive one that keeps it). Decisions are then p_positive >= threshold."""
    if isinstance(rule, (int, float)):
        return float(rule)
    if len(np.unique(y_val)) < 2:
        raise UserError(f"the validation set has only one class, so the threshold rule '{rule}' cannot be applied: "
                        "use evaluation.threshold: 0.5 or a split with both classes in validation.")
    fpr, tpr, thresholds = roc_curve(y_val, p_val)
    if rule == "youden":
        index = int(np.argmax(tpr - fpr))
    elif "specificity" in rule:
        index = int(np.flatnonzero(fpr <= 1 - float(rule["specificity"]) + 1e-12)[-1])
    else:
        index = int(np.flatnonzero(tpr >= float(rule["sensitivity"]))[0])
    return float(min(thresholds[index], 1.0))
