"""Statistics against textbook answers, and the comparison procedure's error rates on simulated data."""

import math

import numpy as np
import pytest

from medablate.analysis import stats


def test_mcnemar_exact_matches_the_textbook_example() -> None:
    # Fagerland, Lydersen & Laake (2013), airway hyper-responsiveness example: 1 vs 7 discordant pairs,
    # exact conditional McNemar p = 0.070 (= 2 * 9/256).
    a = [True] * 1 + [False] * 7 + [True] * 20 + [False] * 5
    b = [False] * 1 + [True] * 7 + [True] * 20 + [False] * 5
    only_a, only_b, p = stats.mcnemar_exact(a, b)
    assert (only_a, only_b) == (1, 7)
    assert p == pytest.approx(0.0703125, abs=1e-12)


def test_wilcoxon_matches_r_documentation_example() -> None:
    # R ?wilcox.test, Hollander & Wolfe depression scale: V = 40, one-sided p = 0.01953 -> two-sided 0.0390625.
    x = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
    y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]
    assert stats.paired_p_value(np.subtract(x, y), "wilcoxon") == pytest.approx(0.0390625, abs=1e-9)


def test_paired_t_matches_r_sleep_example() -> None:
    # R: t.test(extra ~ group, data = sleep, paired = TRUE): t = -4.0621, df = 9, p = 0.002833,
    # mean difference -1.58, 95% CI -2.4598858 to -0.7001142.
    g1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    g2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    d = np.subtract(g1, g2)
    assert stats.paired_p_value(d, "t") == pytest.approx(0.002833, abs=1e-6)
    mean, _, low, high = stats.mean_sd_ci(d)
    assert (mean, low, high) == pytest.approx((-1.58, -2.4598858, -0.7001142), abs=1e-6)


def test_wilcoxon_cannot_reach_5_percent_with_five_seeds() -> None:
    """Why the paired t-test is the default: the smallest two-sided Wilcoxon p with 5 pairs is 0.0625."""
    assert stats.paired_p_value([1.0, 2.0, 3.0, 4.0, 5.0], "wilcoxon") == pytest.approx(0.0625)
    assert stats.paired_p_value([1.0, 2.0, 3.0, 4.0, 5.0], "t") < 0.05


def test_holm_matches_r_p_adjust() -> None:
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") -> 0.03 0.06 0.06 0.02
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = stats.holm([0.2, math.nan, 0.01])
    assert adjusted[0] == pytest.approx(0.2) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_probability_of_improvement_counts_ties_half() -> None:
    assert stats.probability_of_improvement([0.9, 0.8, 0.7], [0.8, 0.8, 0.8], True) == pytest.approx(0.5)
    assert stats.probability_of_improvement([3, 4], [5, 4], False) == pytest.approx(0.75)


def test_convergence_and_stability() -> None:
    acc = [0.5, 0.7, 0.86, 0.9, 0.88, 0.9]
    assert stats.convergence_epoch(acc, 0.95) == 3  # 0.95 * 0.9 = 0.855
    assert stats.stability(acc, 3) == pytest.approx(np.std([0.9, 0.88, 0.9], ddof=1))
    assert math.isnan(stats.stability([0.5], 10))


def test_seeds_needed_grows_as_the_effect_shrinks() -> None:
    big = stats.seeds_needed([1.0, 1.2])
    small = stats.seeds_needed([0.1, 0.5])
    assert big is not None and small is not None and 2 <= big < small
    assert stats.seeds_needed([0.3]) is None


def test_bootstrap_ci_covers_the_observed_difference() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((3, 300)) < 0.8
    b = rng.random((3, 300)) < 0.7
    low, high = stats.paired_bootstrap_ci(a, b, 1000)
    assert low < a.mean() - b.mean() < high


def _simulate_seed_level(effect: float, sims: int, seeds: int = 5, seed: int = 0) -> float:
    """Share of simulated comparisons with p < 0.05: seed-paired outcomes with a shared seed effect."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sims):
        shared = rng.normal(0.85, 0.02, seeds)  # what a seed does to both trials (split is fixed, init differs)
        level = shared + effect + rng.normal(0, 0.01, seeds)
        reference = shared + rng.normal(0, 0.01, seeds)
        hits += stats.paired_p_value(level - reference, "t") < 0.05
    return hits / sims


def _simulate_image_level(effect: float, sims: int, images: int = 400, seeds: int = 5, seed: int = 1) -> float:
    """Share of simulated McNemar tests (majority vote over seeds) with p < 0.05."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sims):
        difficulty = rng.beta(8, 2, images)  # chance that a model gets each image right
        a = rng.random((seeds, images)) < np.clip(difficulty + effect, 0, 1)
        b = rng.random((seeds, images)) < difficulty
        hits += stats.mcnemar_exact(stats.majority_correct(a), stats.majority_correct(b))[2] < 0.05
    return hits / sims


def test_false_positive_rate_on_null_data_is_near_alpha() -> None:
    assert 0.03 <= _simulate_seed_level(0.0, 2000) <= 0.07
    # The exact McNemar test is conservative by construction (discrete; measured 0.027 here): never above alpha.
    assert _simulate_image_level(0.0, 600) <= 0.07


def test_a_real_difference_is_detected() -> None:
    assert _simulate_seed_level(0.03, 300) > 0.8
    assert _simulate_image_level(0.1, 200) > 0.8


# R pROC's aSAH data (Turck et al. 2010, Intensive Care Med 36:107-115; 113 patients after a subarachnoid
# hemorrhage, outcome Good/Poor), as shipped in pROC's data/aSAH.RData, in tests/data/asah.csv. Expected values are
# pROC's own, from its tests/testthat/test-roc.test.R (roc.test(roc1, roc2), DeLong, paired, two-sided), where
# roc(aSAH$outcome, x) takes Poor as the positive class.
ASAH_DELONG = [("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
               ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
               ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094)]


@pytest.mark.parametrize(("a", "b", "z", "p", "low", "high"), ASAH_DELONG)
def test_delong_matches_r_proc_on_the_asah_data(a: str, b: str, z: float, p: float, low: float, high: float) -> None:
    import csv
    from pathlib import Path

    rows = list(csv.DictReader((Path(__file__).parent / "data" / "asah.csv").open()))
    poor = np.array([r["outcome"] == "Poor" for r in rows])
    result = stats.delong(poor, [float(r[a]) for r in rows], [float(r[b]) for r in rows])
    assert result.z == pytest.approx(z, abs=1e-6) and result.p == pytest.approx(p, abs=1e-6)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-6)
    assert stats.delong(poor, [float(r[b]) for r in rows], [float(r[a]) for r in rows]).z == pytest.approx(-z, abs=1e-6)


def test_delong_degenerate_cases() -> None:
    y = np.array([0, 0, 1, 1, 0, 1], bool)
    same = stats.delong(y, [0.1, 0.4, 0.35, 0.8, 0.2, 0.9], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    assert (same.z, same.p, same.difference) == (0.0, 1.0, 0.0)  # pROC: identical curves give Z = 0, p = 1
    assert math.isnan(stats.delong(np.ones(6, bool), np.arange(6), np.arange(6)).p)  # one class: no AUC
    perfect = stats.delong(y, y.astype(float), y.astype(float) * 2)
    assert (perfect.auc_a, perfect.auc_b, perfect.p) == (1.0, 1.0, 1.0)


def test_corrected_resampled_t_matches_a_hand_computation() -> None:
    # Five fold differences from models trained on 400 images and validated on 100 (Nadeau & Bengio 2003, eq. for
    # the corrected resampled t; Bouckaert & Frank 2004 for repeated k-fold): by hand,
    # mean = 0.2 / 5 = 0.04; var = sum((d - 0.04)^2) / 4 = (0 + 0.0004 + 0.0004 + 0.0001 + 0.0001) / 4 = 0.00025;
    # se = sqrt((1/5 + 100/400) * 0.00025) = sqrt(0.45 * 0.00025) = sqrt(0.0001125) = 0.0106066;
    # t = 0.04 / 0.0106066 = 3.77124; two-sided p from t with 4 degrees of freedom.
    d = [0.04, 0.06, 0.02, 0.05, 0.03]
    result = stats.corrected_resampled_t(d, 100 / 400)
    assert result.mean == pytest.approx(0.04)
    assert result.t == pytest.approx(0.04 / math.sqrt(0.45 * 0.00025), rel=1e-12) == pytest.approx(3.77124, rel=1e-5)
    from scipy import stats as st

    assert result.p == pytest.approx(2 * st.t.sf(3.771236166, 4), rel=1e-6) == pytest.approx(0.01959, abs=5e-5)
    half = st.t.ppf(0.975, 4) * math.sqrt(0.45 * 0.00025)  # 2.776445 * 0.0106066 = 0.029449
    assert (result.ci_low, result.ci_high) == pytest.approx((0.04 - half, 0.04 + half), rel=1e-9)
    plain = st.ttest_1samp(d, 0.0)  # the uncorrected test is far more confident: se = sqrt(0.00025 / 5)
    assert plain.pvalue < result.p / 4 and plain.statistic == pytest.approx(5.656854, rel=1e-6)


def test_corrected_resampled_t_degenerate_cases() -> None:
    assert math.isnan(stats.corrected_resampled_t([0.1], 0.25).p)
    assert stats.corrected_resampled_t([0.0, 0.0, 0.0], 0.25).p == 1.0
    assert math.isnan(stats.corrected_resampled_t([0.1, 0.1, 0.1], 0.25).p)  # no spread: no test
