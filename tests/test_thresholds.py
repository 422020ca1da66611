import csv
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


def test_a_comparison_of_threshold_rules_scores_each_trial_with_its_own_rule(tmp_path) -> None:
    """evaluation.threshold as a comparison's levels: each trial's runs and seed ensemble use its rule, the
    outcomes at the decision threshold tell the levels apart, and a rerun of the finished study leaves every run
    as it is (a trial whose rule or test-time augmentation is not the study's was re-scored on each rerun)."""
    import json

    from conftest import medablate, write_study

    rules = ["youden", 0.5, {"sensitivity": 0.95}]
    study = write_study(tmp_path, seeds=[0, 1], evaluation={"threshold": "youden"},
                        data={"split": {"method": "stratified", "val_fraction": 0.3, "test_fraction": 0.0}},
                        comparisons=[{"name": "rule", "vary": {"evaluation.threshold": rules}},
                                     {"name": "views", "vary": {"evaluation.tta": ["none", "flip"]}}])
    out = tmp_path / "out"
    assert medablate("run", str(study), "--out", str(out)).returncode == 0
    trials = {"base": "youden", "0.5": 0.5, "sensitivity0.95": {"sensitivity": 0.95}, "flip": "youden"}
    for trial, rule in trials.items():
        for seed in (0, 1):
            metrics = json.loads((out / "trials" / f"{trial}-seed{seed}" / "metrics.json").read_text())
            assert metrics["evaluation"]["threshold"]["rule"] == metrics["evaluation_config"]["threshold"] == rule
            assert metrics["evaluation_config"]["tta"] == ("flip" if trial == "flip" else "none")
        ensemble = json.loads((out / "ensembles" / trial / "metrics.json").read_text())
        assert ensemble["evaluation"]["threshold"]["rule"] == rule
    summary = {r["trial"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert summary["0.5"]["test_sensitivity_mean"] != summary["base"]["test_sensitivity_mean"]
    # a level that differs only in its rule takes the base trial's training, and gives what training it would
    alone = tmp_path / "alone"
    assert medablate("run", str(study), "--out", str(alone), "--set", "comparisons=[]",
                     "--set", "evaluation.threshold=0.5").returncode == 0
    timing = {"run", "trial", "trained_by", "seconds"}
    for seed in (0, 1):
        taken = json.loads((out / "trials" / f"0.5-seed{seed}" / "metrics.json").read_text())
        trained = json.loads((alone / "trials" / f"base-seed{seed}" / "metrics.json").read_text())
        assert taken["trained_by"] == f"base-seed{seed}" and "trained_by" not in trained
        assert {k: v for k, v in taken.items() if k not in timing} == {k: v for k, v in trained.items() if k not in timing}
        for name in ("predictions_val.csv", "predictions_test.csv"):
            assert (out / "trials" / f"0.5-seed{seed}" / name).read_text() == \
                (alone / "trials" / f"base-seed{seed}" / name).read_text()
    before = {p: p.read_bytes() for p in (out / "trials").rglob("*") if p.is_file()}
    again = medablate("run", str(study), "--out", str(out))
    assert again.returncode == 0 and "re-evaluated" not in again.stderr + again.stdout
    assert {p: p.read_bytes() for p in (out / "trials").rglob("*") if p.is_file()} == before
