"""Clinical metrics agree with scikit-learn; edge cases (ties, one class, perfect classifier) are defined."""

import numpy as np
import pytest
from sklearn import metrics as skm

from medablate.scoring import metrics


def sample(n: int = 400, seed: int = 0, decimals: int | None = 2):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.6).astype(int)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    if decimals is not None:
        p = np.round(p, decimals)  # many ties
    return y, p, (p >= 0.5).astype(int)


def test_point_values_agree_with_sklearn_to_1e9() -> None:
    y, p, d = sample()
    m = metrics.binary_metrics(y, p, d)
    expected = {
        "accuracy": skm.accuracy_score(y, d), "balanced_accuracy": skm.balanced_accuracy_score(y, d),
        "roc_auc": skm.roc_auc_score(y, p), "pr_auc": skm.average_precision_score(y, p),
        "sensitivity": skm.recall_score(y, d), "specificity": skm.recall_score(y, d, pos_label=0),
        "ppv": skm.precision_score(y, d), "npv": skm.precision_score(y, d, pos_label=0),
        "f1": skm.f1_score(y, d), "brier": skm.brier_score_loss(y, p),
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-9), key
    assert m["confusion_matrix"] == skm.confusion_matrix(y, d).tolist()


@pytest.mark.parametrize("decimals", [None, 1])
def test_vectorised_bootstrap_metrics_equal_sklearn_with_sample_weights(decimals) -> None:  # type: ignore[no-untyped-def]
    y, p, d = sample(decimals=decimals)
    weights = np.random.default_rng(1).integers(0, 4, (3, len(y))).astype(float)
    values = metrics.weighted_binary(weights, y, p, d)
    for r, w in enumerate(weights):
        assert values["roc_auc"][r] == pytest.approx(skm.roc_auc_score(y, p, sample_weight=w), abs=1e-9)
        assert values["pr_auc"][r] == pytest.approx(skm.average_precision_score(y, p, sample_weight=w), abs=1e-9)
        assert values["accuracy"][r] == pytest.approx(skm.accuracy_score(y, d, sample_weight=w), abs=1e-9)
        assert values["f1"][r] == pytest.approx(skm.f1_score(y, d, sample_weight=w), abs=1e-9)
        assert values["brier"][r] == pytest.approx(skm.brier_score_loss(y, p, sample_weight=w), abs=1e-9)
        assert values["specificity"][r] == pytest.approx(skm.recall_score(y, d, pos_label=0, sample_weight=w), abs=1e-9)


def test_ece_matches_its_definition() -> None:
    y, p, _ = sample(decimals=None)
    bins = np.minimum((p * 10).astype(int), 9)
    expected = sum(abs(y[bins == b].mean() - p[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    assert metrics.expected_calibration_error(y, p) == pytest.approx(expected, abs=1e-9)


def test_single_class_reports_undefined_auc_not_a_crash() -> None:
    y = np.ones(20, int)
    p = np.linspace(0.1, 0.9, 20)
    m = metrics.binary_metrics(y, p, (p >= 0.5).astype(int))
    assert m["roc_auc"] is None and m["pr_auc"] is None and m["specificity"] is None and "one class" in m["note"]
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, p >= 0.5))
    ci = metrics.bootstrap_intervals(y == 1, p, p >= 0.5, 200)
    assert ci["roc_auc"] == [None, None]


def test_perfect_classifier() -> None:
    y = np.array([0] * 10 + [1] * 10)
    p = np.array([0.1] * 10 + [0.9] * 10)
    m = metrics.binary_metrics(y, p, (p >= 0.5).astype(int))
    for key in ("accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv", "f1"):
        assert m[key] == 1.0, key
    ci = metrics.bootstrap_intervals(y == 1, p, p >= 0.5, 200)
    assert ci["roc_auc"] == [1.0, 1.0] and ci["accuracy"] == [1.0, 1.0]


def test_bootstrap_is_stratified_and_brackets_the_point_value() -> None:
    y, p, d = sample(1000, decimals=None)
    weights = metrics.stratified_weights(y, 50)
    assert np.all(weights[:, y == 1].sum(1) == (y == 1).sum())
    ci = metrics.bootstrap_intervals(y == 1, p, d == 1, 2000)
    point = metrics.binary_metrics(y, p, d)
    for key in ("roc_auc", "accuracy", "sensitivity", "brier"):
        assert ci[key][0] <= point[key] <= ci[key][1], key


def test_multiclass_macro_and_per_class() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    probabilities = rng.dirichlet([1, 1, 1], 300)
    probabilities[np.arange(300), y] += 0.5
    probabilities /= probabilities.sum(1, keepdims=True)
    d = probabilities.argmax(1)
    m = metrics.multiclass_metrics(y, probabilities, d, ["a", "b", "c"])
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probabilities, multi_class="ovr"), abs=1e-9)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, d), abs=1e-9)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, d, average="macro"), abs=1e-9)
    assert m["per_class"]["b"]["sensitivity"] == pytest.approx(skm.recall_score(y, d, average=None)[1], abs=1e-9)


def test_stratified_weights_are_kept_read_only_for_the_same_labels() -> None:
    y = np.array([0, 1, 1, 0, 1, 0, 0])
    first = metrics.stratified_weights(y, 30, seed=3)
    assert metrics.stratified_weights(y.copy(), 30, seed=3) is first  # kept: the same labels, resamples and seed
    assert metrics.stratified_weights(y == 1, 30, seed=3) is first  # bool labels: the same classes
    assert not first.flags.writeable  # no caller can change what the next one gets
    assert not np.array_equal(metrics.stratified_weights(y, 30, seed=4), first)
    assert np.all(first[:, y == 1].sum(1) == 3) and np.all(first[:, y == 0].sum(1) == 4)
    large = np.arange(metrics.KEPT_BYTES // 8 // 30 + 1) % 2  # over the size kept: drawn anew, the same counts
    assert metrics.stratified_weights(large, 30) is not metrics.stratified_weights(large, 30)
    assert np.array_equal(metrics.stratified_weights(large, 30), metrics.stratified_weights(large, 30))
