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
