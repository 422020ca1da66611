"""Statistics over seeds and images: pure functions on numbers, built on scipy and numpy.

Choices (see README, "Which differences are real"):
- Across seeds, the paired t-test is the default: with 5 seeds the exact Wilcoxon signed-rank test
  cannot reach p < 0.05 at all (its smallest two-sided p is 2/2^5 = 0.0625), so it could never call a
  difference real at the seed counts people use. `analysis.test: wilcoxon` picks it for >= 6 seeds.
- On the test set, McNemar's exact test (a binomial test on the discordant images) compares two
  trials image by image; over several seeds each image counts once, as decided by the trial's seed
  ensemble (compare.image_row), so images stay independent.
- Two ROC AUCs on the same test images: DeLong's test (DeLong, DeLong & Clarke-Pearson 1988), computed with
  the midrank algorithm of Sun & Xu (2014). Its unit is the image: it asks whether two models differ on this
  population of images, not whether two configurations differ.
- k-fold cross-validation: the folds' models share most of their training images, so fold-level differences are
  correlated and a plain t-test over them is far too liberal. The corrected resampled t-test (Nadeau & Bengio 2003;
  for repeated k-fold, Bouckaert & Frank 2004) inflates the variance of the mean by (1/J + n_test/n_train).
- Holm's step-down correction over every p-value of a study.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

Bounds = tuple[float, float]
UNBOUNDED: Bounds = (-math.inf, math.inf)

Values = Sequence[float] | np.ndarray  # numbers, as a list or an array
Flags = Sequence[bool] | np.ndarray


def mean_sd_ci(values: Sequence[float], confidence: float = 0.95,
               bounds: Bounds = UNBOUNDED) -> tuple[float, float, float, float]:
    """Mean, sample SD and the t-based confidence interval of the mean (NaN where undefined). The interval is
    intersected with `bounds`, the range the mean can take (an accuracy in [0, 1], a time above 0): with few seeds
    a t interval reaches past it (2 seeds: 12.7 standard errors either side), and a mean accuracy above 100% is no
    possible value. The intersection keeps the interval's coverage (the true mean lies inside the range)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(x.std(ddof=1))
    if sd == 0:
        return mean, 0.0, mean, mean
    low, high = st.t.interval(confidence, len(x) - 1, loc=mean, scale=sd / math.sqrt(len(x)))
    return mean, sd, float(max(low, bounds[0])), float(min(high, bounds[1]))


def paired_p_value(differences: Sequence[float], method: str = "t") -> float:
    """Two-sided p-value that the mean (t) or median (wilcoxon) paired difference is zero."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return math.nan
    if np.all(d == 0):
        return 1.0
    if method == "wilcoxon":
        return float(st.wilcoxon(d).pvalue)
    if no_spread(d):  # a t statistic would be infinite (p = 0): use the exact sign-flip test instead
        return sign_flip_p(d)
    return float(st.ttest_1samp(d, 0.0).pvalue)


def no_spread(differences: Values) -> bool:
    """Every paired difference is the same non-zero value: a t-test cannot be computed there."""
    d = np.asarray(differences, dtype=float)
    return len(d) >= 2 and bool(np.all(d == d[0])) and d[0] != 0


def sign_flip_p(differences: Values, exact_limit: int = 16, resamples: int = 100_000) -> float:
    """Two-sided exact permutation test of a zero mean paired difference: every sign pattern of the differences
    (Monte Carlo over `resamples` patterns above `exact_limit` pairs). Valid with no spread at all: with n
    identical differences p = 2 / 2^n."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n == 0:
        return math.nan
    if n <= exact_limit:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = np.random.default_rng(0).choice([-1, 1], size=(resamples, n))
    means = np.abs((signs * d).mean(axis=1))
    return float(np.mean(means >= abs(d.mean()) - 1e-12))


def probability_of_improvement(level: Values, reference: Values, higher_is_better: bool) -> float:
    """Share of seed pairs in which the level beats the reference (ties count half; Bouthillier et al. 2021)."""
    a, b = np.asarray(level, float), np.asarray(reference, float)
    if len(a) == 0:
        return math.nan
    wins = (a > b) if higher_is_better else (a < b)
    return float((wins.sum() + 0.5 * (a == b).sum()) / len(a))


def mcnemar_exact(correct_a: Flags, correct_b: Flags) -> tuple[int, int, float]:
    """Discordant counts (a right and b wrong, a wrong and b right) and the exact two-sided p-value."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(st.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def majority_correct(correct_by_seed: np.ndarray) -> np.ndarray:
    """(seeds, images) 0/1 -> per image: correct in more than half of the seeds."""
    return np.asarray(correct_by_seed, float).mean(axis=0) > 0.5


def paired_bootstrap_ci(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> tuple[float, float]:
    """CI of the accuracy difference a - b, resampling images (each image's seeds stay together)."""
    per_image = np.asarray(correct_a, float).reshape(-1, np.shape(correct_a)[-1]).mean(0) \
        - np.asarray(correct_b, float).reshape(-1, np.shape(correct_b)[-1]).mean(0)
    if np.all(per_image == per_image[0]):
        return float(per_image[0]), float(per_image[0])
    result = st.bootstrap((per_image,), np.mean, n_resamples=resamples, confidence_level=confidence,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class DeLong:
    """Two correlated ROC AUCs on the same images: each AUC, their difference with its 95% CI, z and p."""
    auc_a: float
    auc_b: float
    difference: float
    ci_low: float
    ci_high: float
    z: float
    p: float


def delong(labels: Flags, scores_a: Values, scores_b: Values, confidence: float = 0.95) -> DeLong:
    """DeLong's paired test that two scores of the same images have the same ROC AUC (two-sided), in Sun & Xu's
    O(n log n) form: midranks give each positive's and each negative's placement (its structural component), the
    covariance of the placements gives the variance of the AUC difference. Equals R pROC's
    `roc.test(method = "delong", paired = TRUE)` (tests/test_stats.py). NaN where one class is missing."""
    y = np.asarray(labels, bool)
    scores = np.vstack([np.asarray(scores_a, float), np.asarray(scores_b, float)])
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return DeLong(*(math.nan,) * 7)
    positives, negatives = scores[:, y], scores[:, ~y]
    combined = st.rankdata(np.hstack([positives, negatives]), axis=1)
    auc = (combined[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (combined[:, :m] - st.rankdata(positives, axis=1)) / n  # per positive: share of negatives below it
    v01 = 1 - (combined[:, m:] - st.rankdata(negatives, axis=1)) / m  # per negative: share of positives above it
    s = np.cov(v10) / m + np.cov(v01) / n
    difference, variance = float(auc[0] - auc[1]), float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    if variance <= 0:  # the same scores twice, or both perfect: no difference can be seen
        return DeLong(float(auc[0]), float(auc[1]), difference, difference, difference, 0.0, 1.0)
    z = difference / math.sqrt(variance)
    half = float(st.norm.ppf(0.5 + confidence / 2)) * math.sqrt(variance)
    return DeLong(float(auc[0]), float(auc[1]), difference, difference - half, difference + half, z,
                  float(2 * st.norm.sf(abs(z))))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values; NaN entries stay NaN and do not count towards the family."""
    p = np.asarray(p_values, float)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(len(p), np.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def seeds_needed(differences: Sequence[float], alpha: float = 0.05, power: float = 0.8, limit: int = 1000) -> int | None:
    """Seeds a paired t-test would need to detect the observed mean difference with the observed spread.

    A simple power estimate (noncentral t); None when the spread cannot be estimated (fewer than 2
    pairs) or the observed difference is zero. Returns limit when even that many would not do.
    """
    d = np.asarray(differences, float)
    if len(d) < 2 or d.std(ddof=1) == 0 or d.mean() == 0:
        return None
    effect = abs(d.mean()) / d.std(ddof=1)
    n = np.arange(2, limit + 1)  # every candidate at once (one scipy call, not up to a thousand)
    critical, noncentrality = st.t.ppf(1 - alpha / 2, n - 1), effect * np.sqrt(n)
    achieved = 1 - st.nct.cdf(critical, n - 1, noncentrality) + st.nct.cdf(-critical, n - 1, noncentrality)
    enough = np.flatnonzero(achieved >= power)
    return int(n[enough[0]]) if len(enough) else limit


def convergence_epoch(val_acc: Sequence[float], fraction: float = 0.95) -> int | None:
    """First epoch (1-based) whose validation accuracy reaches fraction of the run's best."""
    if not val_acc:
        return None
    target = fraction * max(val_acc)
    return next(i + 1 for i, v in enumerate(val_acc) if v >= target)


def stability(val_acc: Sequence[float], window: int = 10) -> float:
    """Sample SD of validation accuracy over the last `window` epochs (NaN with fewer than 2)."""
    tail = np.asarray(val_acc[-window:], float)
    return float(tail.std(ddof=1)) if len(tail) >= 2 else math.nan


@dataclass(frozen=True)
class Resampled:
    """The corrected resampled t-test of J fold-level differences."""

    mean: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    folds: int
    test_over_train: float


def corrected_resampled_t(differences: Values, test_over_train: float, confidence: float = 0.95,
                          bounds: Bounds = UNBOUNDED) -> Resampled:
    """Nadeau & Bengio's corrected resampled t-test over J = folds x repeats paired differences, each from models
    trained on n_train images and scored on n_test: t = mean / sqrt((1/J + n_test/n_train) * var), with J - 1
    degrees of freedom; the interval is mean +- t_crit times that standard error (intersected with `bounds`)."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return Resampled(mean, math.nan, math.nan, math.nan, math.nan, n, test_over_train)
    if np.all(d == d[0]):  # no spread: a t statistic cannot be computed (nor a sign-flip test: the folds overlap)
        return Resampled(mean, math.nan, 1.0 if mean == 0 else math.nan, mean, mean, n, test_over_train)
    se = math.sqrt((1 / n + test_over_train) * float(d.var(ddof=1)))
    t = mean / se
    half = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return Resampled(mean, t, float(2 * st.t.sf(abs(t), n - 1)), max(mean - half, bounds[0]),
                     min(mean + half, bounds[1]), n, test_over_train)
