"""Does validation stand for test? The validation-test gap of a trial, in a table and in warnings.

Pure functions over an `evaluation` section of metrics.json (a run's or a seed ensemble's): they never retrain
and never look at anything but the saved numbers.
"""

from __future__ import annotations

from typing import Any

from medablate.folder.records import EvaluationReport, SplitScores

GAP_METRICS = ("roc_auc", "sensitivity", "specificity", "accuracy")
ECE_LIMIT = 0.1


def prevalence(section: SplitScores | None) -> float | None:
    """Share of the positive class, from a binary confusion matrix [[tn, fp], [fn, tp]]."""
    matrix = section.at_rule.confusion_matrix if section else None
    if not matrix or len(matrix) != 2:
        return None
    total = sum(sum(row) for row in matrix)
    return sum(matrix[1]) / total if total else None


def _at(section: SplitScores | None, at: str) -> Any:
    return section.at(at) if section else None


def gap_rows(evaluation: EvaluationReport) -> list[list[Any]]:
    """metric, rule, validation, test, test 95% CI: at 0.5 and at the validated threshold, plus prevalence."""
    val, test = evaluation.val, evaluation.test
    rows: list[list[Any]] = []
    for at, rule in (("at_0.5", "0.5"), ("at_threshold", "validated threshold")):
        shown, tested = _at(val, at), _at(test, at)
        if shown is None:
            continue
        for key in GAP_METRICS:
            ci = (tested.interval(key) if tested else None) or [None, None]
            rows.append([key, rule, shown.metric(key), tested.metric(key) if tested else None,
                         f"{ci[0]:.3f} to {ci[1]:.3f}" if ci[0] is not None else "–"])
    rows.append(["prevalence of the positive class", "", prevalence(val), prevalence(test), "–"])
    return rows


def gap_warnings(name: str, evaluation: EvaluationReport | None) -> list[str]:
    """A warning per metric whose validation value lies outside the test 95% CI (at the threshold the study uses),
    and one when the test probabilities are poorly calibrated (ECE above 0.1)."""
    if evaluation is None:
        return []
    val, test = evaluation.val, evaluation.test
    at = "at_threshold" if test and test.at_threshold is not None else "at_0.5"
    found = []
    moved = []
    for key in GAP_METRICS:
        shown, tested = _at(val, at), _at(test, at)
        v, t = shown.metric(key) if shown else None, tested.metric(key) if tested else None
        ci = tested.interval(key) if tested else None
        if v is None or t is None or not ci or ci[0] is None or ci[0] <= v <= ci[1]:
            continue
        moved.append(f"{key.replace('roc_auc', 'AUC')} {v:.2f} on validation, {t:.2f} on test "
                     f"(test 95% CI {ci[0]:.2f} to {ci[1]:.2f})")
    if moved:
        prevalences = prevalence(val), prevalence(test)
        shift = (f"; the positive class is {prevalences[0]:.0%} of validation and {prevalences[1]:.0%} of test"
                 if None not in prevalences and abs(prevalences[0] - prevalences[1]) >= 0.05 else "")  # type: ignore[operator]
        found.append(f"{name}: validation did not transfer to test: {'; '.join(moved)}{shift}. Checkpoints and "
                     "thresholds chosen on validation may not hold on new data.")
    ece = test.at_rule.ece if test else None
    if ece is not None and ece > ECE_LIMIT:
        found.append(f"{name}: the test probabilities are poorly calibrated (ECE {ece:.3f} > {ECE_LIMIT}): read them "
                     "as scores, not as risks (see the reliability figure).")
    return found
