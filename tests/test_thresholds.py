import numpy as np
import pytest

from medablate.scoring.clinical import Predictions, evaluate_trial
from medablate.config.schema import EvaluationConfig
from medablate.errors import UserError
from medablate.scoring.thresholds import choose_threshold


def predictions(n: int, seed: int) -> Predictions:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    positive = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    return Predictions(y, np.stack([1 - positive, positive], 1), (positive > 0.5).astype(int))


def test_sensitivity_target_is_reached_on_validation_with_the_highest_threshold() -> None:
    val = predictions(500, 0)
    threshold = choose_threshold({"sensitivity": 0.95}, val.labels, val.positive)
    decided = val.positive >= threshold
    assert decided[val.labels == 1].mean() >= 0.95
    higher = np.unique(val.positive[val.positive > threshold])
    if len(higher):  # any higher threshold loses the target
        assert (val.positive >= higher[0])[val.labels == 1].mean() < 0.95


def test_specificity_target_is_kept_on_validation_with_the_lowest_threshold() -> None:
    val = predictions(500, 2)
    threshold = choose_threshold({"specificity": 0.9}, val.labels, val.positive)
    decided = val.positive >= threshold
    assert (~decided)[val.labels == 0].mean() >= 0.9
    lower = np.unique(val.positive[val.positive < threshold])
    assert len(lower) and (val.positive < lower[-1])[val.labels == 0].mean() < 0.9  # any lower one loses it
    assert EvaluationConfig(threshold={"specificity": 0.9}).rule == {"specificity": 0.9}
    with pytest.raises(ValueError, match="specificity"):
        EvaluationConfig(threshold={"specificity": 1.5})


def test_youden_maximises_sensitivity_plus_specificity() -> None:
    val = predictions(300, 1)
    threshold = choose_threshold("youden", val.labels, val.positive)

    def youden(t: float) -> float:
        d = val.positive >= t
        return d[val.labels == 1].mean() + (~d[val.labels == 0]).mean() - 1

    assert youden(threshold) >= max(youden(t) for t in np.unique(val.positive)) - 1e-12


def test_test_metrics_use_the_validation_threshold_not_one_tuned_on_test() -> None:
    val, test = predictions(400, 2), predictions(400, 3)
    report, threshold = evaluate_trial(val, test, EvaluationConfig(threshold={"sensitivity": 0.95}), ["n", "p"])
    assert threshold == choose_threshold({"sensitivity": 0.95}, val.labels, val.positive)
    assert threshold != choose_threshold({"sensitivity": 0.95}, test.labels, test.positive)
    decided = test.positive >= threshold
    assert report["test"]["at_threshold"]["sensitivity"] == pytest.approx(decided[test.labels == 1].mean())
    assert report["val"]["at_threshold"]["sensitivity"] >= 0.95
    assert report["test"]["at_0.5"]["accuracy"] == pytest.approx((test.decisions == test.labels).mean())
    assert report["test"]["at_threshold"]["ci95"]["roc_auc"][0] is not None
    assert report["threshold"]["chosen_on"] == "validation"


def test_a_one_class_validation_set_cannot_choose_a_threshold() -> None:
    with pytest.raises(UserError, match="only one class"):
        choose_threshold("youden", np.ones(10, int), np.linspace(0, 1, 10))


def test_the_prevalence_rule_maximises_expected_accuracy_at_that_prevalence() -> None:
    val = predictions(400, 4)
    positives, negatives = val.labels == 1, val.labels == 0

    def expected_accuracy(t: float, q: float) -> float:
        decided = val.positive >= t
        return q * decided[positives].mean() + (1 - q) * (~decided[negatives]).mean()

    candidates = np.unique(val.positive)
    chosen = {}
    for q in (0.2, 0.5, 0.8):
        chosen[q] = choose_threshold({"prevalence": q}, val.labels, val.positive)
        assert expected_accuracy(chosen[q], q) >= max(expected_accuracy(t, q) for t in candidates) - 1e-12
    assert chosen[0.5] == choose_threshold("youden", val.labels, val.positive)  # q = 1/2 is Youden's J
    assert chosen[0.2] >= chosen[0.5] >= chosen[0.8] and chosen[0.2] > chosen[0.8]  # fewer positives: stricter
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="prevalence"):
            EvaluationConfig(threshold={"prevalence": bad})


def binormal(n: int, seed: int) -> Predictions:
    """Scores whose ROC curve is smooth (the binormal model, d' = 1.5): every rule has one clear optimum."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    positive = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y - 0.75)))
    return Predictions(y, np.stack([1 - positive, positive], 1), (positive > 0.5).astype(int))


@pytest.mark.parametrize("rule", ["youden", {"sensitivity": 0.9}, {"specificity": 0.9}, {"prevalence": 0.3}])
def test_each_rule_has_a_validation_interval_around_its_threshold(rule: object) -> None:
    from medablate.scoring.thresholds import interval

    small, large = binormal(120, 5), binormal(2000, 5)
    for val in (small, large):
        low, high = interval(rule, val.labels, val.positive, 1000)
        assert low <= choose_threshold(rule, val.labels, val.positive) <= high
    width = {n: np.diff(interval(rule, v.labels, v.positive, 1000))[0] for n, v in (("small", small), ("large", large))}
    assert width["large"] < width["small"]  # more validation images, a narrower interval
    assert interval(0.5, small.labels, small.positive, 1000) is None
    report, _ = evaluate_trial(small, None, EvaluationConfig(threshold=rule, bootstrap_resamples=1000), ["n", "p"])
    assert report["threshold"]["ci95"] == interval(rule, small.labels, small.positive, 1000)
    assert report["val"]["at_threshold"]["ci95"]["sensitivity"][0] is not None  # the operating point's CI
