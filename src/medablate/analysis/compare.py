"""Which differences in a study are real: per-trial summaries over seeds, paired comparisons against each
comparison's reference level, Holm-corrected p-values, and conclusions in words.

Reads the run folder only (metrics.json, history.csv, predictions_test.csv), so `medablate compare DIR`
recomputes everything without training and works on a partly finished study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medablate.analysis import stats
from medablate.analysis.ensembles import (
    ENSEMBLE_COLUMNS,
    mean_predictions,
    start_ensembles,
    summary_columns,
)
from medablate.analysis.outcomes import (
    BY_KEY,
    OUTCOMES,
    TEST_OVER_TRAIN,
    Outcome,
    is_tested,
    run_outcomes,
    scaled,
)
from medablate.config.schema import Study, to_plain
from medablate.core import atomic, faults
from medablate.core.children import Mapper, in_turn
from medablate.execute import results
from medablate.execute.plan import Plan, Replicate, Trial, level_label, load_study_folder, reference_trial
from medablate.folder import claims, layout, rundir
from medablate.scoring.clinical import Predictions

MIN_SEEDS = 3
DESCRIPTIVE = "descriptive only"
PER_IMAGE = "test_acc_per_image"
PER_IMAGE_AUC = "test_auc_per_image"
IMAGE_ROWS = (PER_IMAGE, PER_IMAGE_AUC)  # rows whose unit is the test image, not the seed
# Their tests ask whether two sets of trained models differ on these test images, which two trainings of one
# configuration nearly always do (benchmarks/null_calibration.py): they never enter a family or give a verdict.
PER_IMAGE_ROLE = "models on these images"
CORRECTED = "corrected resampled t (Nadeau & Bengio)"
COMPARISON_COLUMNS = ["comparison", "level", "reference", "outcome", "unit", "n", "level_mean", "reference_mean",
                      "difference", "ci_low", "ci_high", "test", "role", "p", "p_holm", "prob_improvement", "verdict",
                      "seeds_needed", "family", "family_size", "detail"]


Found = dict[tuple[str, Replicate], dict[str, float]]  # a finished run's outcomes, by (trial id, (seed, fold))


@dataclass
class Analysis:
    summary: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    sentences: dict[str, list[str]]
    missing: list[str] = field(default_factory=list)
    outcomes: Found = field(default_factory=dict)  # per (trial id, replicate)
    results: list[dict[str, Any]] = field(default_factory=list)  # results.csv's rows, once written


def collect(out: Path, study: Study, plan: Plan) -> tuple[Found, list[str]]:
    """Outcomes per (trial id, replicate) for finished runs, and the ids of runs that are not (yet) usable."""
    found, missing = {}, []
    for run in plan.runs:
        values = run_outcomes(rundir.trial_dir(out, run.id), study.analysis)
        if values is None:
            missing.append(f"{run.id} ({rundir.run_status(rundir.trial_dir(out, run.id))})")
        else:
            found[(run.trial.id, run.replicate)] = values
    return found, missing


def summarise(plan: Plan, found: Found) -> list[dict[str, Any]]:
    """Per trial, each outcome's mean, SD and 95% CI over its seeds; kfold: over its folds (each fold's mean over
    seeds), with the corrected resampled interval."""
    rows = []
    for trial in plan.trials:
        finished = [r for r in plan.replicates if (trial.id, r) in found]
        row: dict[str, Any] = {"trial": trial.id, "comparisons": ";".join(trial.comparisons),
                               "seeds": len({seed for seed, _ in finished})}
        if plan.folds:
            row["folds"] = len({fold for _, fold in finished})
        for outcome in OUTCOMES:
            if plan.folds:
                mean, sd, low, high = _fold_mean_ci(trial, finished, found, outcome)
            else:
                mean, sd, low, high = stats.mean_sd_ci([found[(trial.id, r)][outcome.key] for r in finished],
                                                       bounds=outcome.bounds)
            row.update({f"{outcome.key}_mean": mean, f"{outcome.key}_sd": sd,
                        f"{outcome.key}_ci_low": low, f"{outcome.key}_ci_high": high})
        rows.append(row)
    return rows


def _fold_mean_ci(trial: Trial, finished: list[Replicate], found: Found,
                  outcome: Outcome) -> tuple[float, float, float, float]:
    """kfold: the mean over folds of each fold's mean over seeds, the SD of those, and the corrected interval."""
    pairs = [(r, found[(trial.id, r)][outcome.key]) for r in finished]
    pairs = [(r, v) for r, v in pairs if math.isfinite(v)]
    if not pairs:
        return (math.nan,) * 4
    reps, values = [r for r, _ in pairs], np.array([v for _, v in pairs])
    means = _by_fold(reps, values)
    ratio = _test_over_train(found, [(trial.id, r) for r in reps])
    result = stats.corrected_resampled_t(means, ratio, bounds=outcome.bounds)
    sd = float(np.std(means, ddof=1)) if len(means) > 1 else math.nan
    return result.mean, sd, result.ci_low, result.ci_high


def _by_fold(replicates: list[Replicate], values: np.ndarray) -> np.ndarray:
    """kfold: each fold's mean over its seeds, in the order of first appearance."""
    folds = list(dict.fromkeys(fold for _, fold in replicates))
    return np.array([values[[f == fold for _, f in replicates]].mean() for fold in folds])


def _test_over_train(found: Found, keys: list[tuple[str, Replicate]]) -> float:
    """kfold: the mean over these runs of validation images / training images (the correction's ratio)."""
    ratios = [found[k].get(TEST_OVER_TRAIN, math.nan) for k in keys]
    finite = [r for r in ratios if math.isfinite(r)]
    return float(np.mean(finite)) if finite else math.nan


def _paired(found: Found, level: Trial, reference: Trial, replicates: list[Replicate],
            key: str) -> tuple[list[Replicate], np.ndarray, np.ndarray]:
    pairs = [(r, found[(level.id, r)][key], found[(reference.id, r)][key]) for r in replicates
             if (level.id, r) in found and (reference.id, r) in found]
    pairs = [p for p in pairs if math.isfinite(p[1]) and math.isfinite(p[2])]
    return [p[0] for p in pairs], np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs])


def seed_row(study: Study, outcome: Outcome, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Paired comparison over seeds of one outcome: difference, CI, test, P(improvement), seeds needed."""
    d = a - b
    mean, _, low, high = stats.mean_sd_ci(d, bounds=outcome.difference_bounds)
    enough = len(d) >= MIN_SEEDS and is_tested(outcome)
    test = "Wilcoxon signed-rank" if study.analysis.test == "wilcoxon" else "paired t"
    detail = ""
    if not is_tested(outcome):
        test, detail = DESCRIPTIVE, f"reported, never tested: {outcome.untested_because}"
    elif stats.no_spread(d) and study.analysis.test == "t":
        test, low, high = "exact sign-flip permutation (no spread: a t-test cannot be computed)", math.nan, math.nan
        detail = f"every seed pair differs by exactly {d[0]:.6g}"
    return {"outcome": outcome.key, "unit": "seeds", "n": len(d), "level_mean": float(a.mean()),
            "reference_mean": float(b.mean()), "difference": mean, "ci_low": low, "ci_high": high, "test": test,
            "p": stats.paired_p_value(d, study.analysis.test) if enough else math.nan,
            "prob_improvement": stats.probability_of_improvement(a, b, outcome.higher_is_better),
            "seeds_needed": stats.seeds_needed(d, study.analysis.alpha) if is_tested(outcome) else None,
            "detail": detail}


def fold_row(outcome: Outcome, a: np.ndarray, b: np.ndarray, test_over_train: float) -> dict[str, Any]:
    """kfold: paired comparison over folds (each fold's values averaged over its seeds first) with the corrected
    resampled t-test, whose ratio is the folds' validation / training images."""
    result = stats.corrected_resampled_t(a - b, test_over_train, bounds=outcome.difference_bounds)
    tested = is_tested(outcome) and len(a) >= MIN_SEEDS
    return {"outcome": outcome.key, "unit": "folds", "n": len(a), "level_mean": float(a.mean()),
            "reference_mean": float(b.mean()), "difference": result.mean,
            "ci_low": result.ci_low if is_tested(outcome) else math.nan,
            "ci_high": result.ci_high if is_tested(outcome) else math.nan,
            "test": CORRECTED if is_tested(outcome) else DESCRIPTIVE, "p": result.p if tested else math.nan,
            "prob_improvement": stats.probability_of_improvement(a, b, outcome.higher_is_better), "seeds_needed": None,
            "detail": f"{len(a)} folds; n_test/n_train {test_over_train:.4f}" if is_tested(outcome) else
            f"reported, never tested: {outcome.untested_because}"}


def image_row(study: Study, level: list[Path], reference: list[Path]) -> dict[str, Any] | None:
    """Two trials' seed ensembles (mean of the seeds' probabilities, decided at the loss's rule; the run folders of
    each trial's seeds) compared image by image on the test set. One definition of "right" for every number of the
    row: the counts of images right only for one side, the accuracy difference (their difference over the images),
    its paired bootstrap CI over images and McNemar's exact test on those counts. With one seed the ensemble is
    that seed's model."""
    found = _ensembles(level, reference)
    if found is None:
        return None
    a, b = (p.decisions == p.labels for p in found)
    only_level, only_ref, p = stats.mcnemar_exact(a, b)
    low, high = stats.paired_bootstrap_ci(a[None], b[None], study.analysis.bootstrap_resamples)
    return {"outcome": PER_IMAGE, "unit": "images", "n": len(a), "level_mean": float(a.mean()), "reference_mean": float(b.mean()),
            "difference": (only_level - only_ref) / len(a), "ci_low": low, "ci_high": high,
            "test": "McNemar exact on the seed ensembles' decisions; paired bootstrap CI over images",
            "p": p if len(level) >= MIN_SEEDS else math.nan, "prob_improvement": math.nan, "seeds_needed": None,
            "detail": f"test images right only for the level's seed ensemble: {only_level}, only for the "
                      f"reference's: {only_ref}; seeds: {len(level)}"}


def auc_row(study: Study, level: list[Path], reference: list[Path]) -> dict[str, Any] | None:
    """Two trials' seed ensembles' ROC AUCs on the same test images, compared with DeLong's paired test (two classes
    only); the detail gives each seed pair's own AUC difference and DeLong p. Like McNemar's row, its unit is the
    image: it holds the trained models fixed."""
    found = _ensembles(level, reference)
    if found is None or found[0].probabilities.shape[1] != 2 or len(np.unique(found[0].labels)) < 2:
        return None
    positive = found[0].labels == 1
    pooled = stats.delong(positive, found[0].probabilities[:, 1], found[1].probabilities[:, 1])
    per_seed = ", ".join(f"{a.name} vs {b.name} {r.difference:+.3f} (p {r.p:.2g})"
                         for a, b in zip(level, reference, strict=True) if (r := _pair_delong(a, b)) is not None)
    return {"outcome": PER_IMAGE_AUC, "unit": "images", "n": len(positive), "level_mean": pooled.auc_a,
            "reference_mean": pooled.auc_b,
            "difference": pooled.difference, "ci_low": pooled.ci_low, "ci_high": pooled.ci_high,
            "test": "DeLong (paired ROC AUCs of the seed ensembles' probabilities on the same test images)",
            "p": pooled.p if len(level) >= MIN_SEEDS else math.nan, "prob_improvement": math.nan,
            "seeds_needed": None, "detail": f"per seed pair: {per_seed}; seeds: {len(level)}"}


def _pair_delong(level: Path, reference: Path) -> stats.DeLong | None:
    """DeLong on one seed pair's own test probabilities."""
    found = _ensembles([level], [reference])
    if found is None:
        return None
    return stats.delong(found[0].labels == 1, found[0].probabilities[:, 1], found[1].probabilities[:, 1])


def _ensembles(level: list[Path], reference: list[Path]) -> tuple[Predictions, Predictions] | None:
    """Both trials' seed ensembles' test predictions, when every seed has them and all are of the same images."""
    names = _class_names(level[0])
    found = [mean_predictions(dirs, "test", names) if names else None for dirs in (level, reference)]
    if found[0] is None or found[1] is None or found[0][0] != found[1][0]:
        return None
    return found[0][1], found[1][1]


def _class_names(run_dir: Path) -> list[str]:
    rows = rundir.read_predictions(rundir.predictions_file(run_dir, "test"))
    return [key.removeprefix("prob_") for key in (rows[0] if rows else {}) if key.startswith("prob_")]


def compare_rows(out: Path, study: Study, plan: Plan, found: dict) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for comparison in study.comparisons:
        keys = list(comparison.vary)
        reference = reference_trial(study, plan, comparison)
        for level in plan.trials_of(comparison.name):
            if level.id == reference.id:
                continue
            head = {"comparison": comparison.name, "level": level_label(level, keys),
                    "reference": level_label(reference, keys), "primary": primary_outcome(study, comparison, found)}
            for outcome in OUTCOMES:
                replicates, a, b = _paired(found, level, reference, plan.replicates, outcome.key)
                if not replicates:
                    continue
                if plan.folds:
                    ratio = _test_over_train(found, [(level.id, r) for r in replicates])
                    rows.append(head | fold_row(outcome, _by_fold(replicates, a), _by_fold(replicates, b), ratio))
                else:
                    rows.append(head | seed_row(study, outcome, a, b))
            replicates, _, _ = _paired(found, level, reference, plan.replicates, "test_acc")
            dirs = [[rundir.trial_dir(out, rundir.run_id(trial.id, *r)) for r in replicates]
                    for trial in (level, reference)]
            for image_test in (image_row, auc_row):
                per_image = image_test(study, *dirs) if replicates else None
                if per_image:
                    rows.append(head | per_image)
    return correct_family(rows, study)


def primary_outcome(study: Study, comparison: Any, found: dict) -> str:
    """The outcome a comparison answers: its own `primary:`, else the study's, else test accuracy when the study
    has a test set and the validation accuracy of the checkpoint used when it has not."""
    if comparison.primary or study.analysis.primary:
        return str(comparison.primary or study.analysis.primary)
    has_test = any(math.isfinite(v.get("test_acc", math.nan)) for v in found.values())
    return "test_acc" if has_test else "val_acc"


def correct_family(rows: list[dict[str, Any]], study: Study) -> list[dict[str, Any]]:
    """Holm over the family: the primary tests (one per level and comparison), or with `analysis.family: all`
    every test of the study. Outside the primary family a p-value is exploratory: raw, and never a verdict."""
    everything = study.analysis.family == "all"
    for row in rows:
        primary = row.pop("primary", None)
        row["role"] = "descriptive" if row["test"] == DESCRIPTIVE else PER_IMAGE_ROLE if row["outcome"] in IMAGE_ROWS \
            else "primary" if row["outcome"] == primary else "secondary" if everything else "exploratory"
    members = [r for r in rows if r["role"] == "primary" or (everything and r["role"] == "secondary")]
    member_ids = {id(r) for r in members}
    adjusted = stats.holm([r["p"] for r in members])
    size = sum(1 for r in members if not math.isnan(r["p"]))
    for row, p_holm in zip(members, adjusted, strict=False):
        row["p_holm"] = p_holm
    for row in rows:
        row.setdefault("p_holm", math.nan)
        in_family = id(row) in member_ids
        row["family"] = ("all tests" if everything else "primary tests") if in_family else ""
        row["family_size"] = size if in_family else None
        row["verdict"] = verdict(row, study.analysis.alpha)
    return rows


def verdict(row: dict[str, Any], alpha: float) -> str:
    if row["test"] == DESCRIPTIVE:
        return "descriptive"
    if row.get("role") == PER_IMAGE_ROLE:  # a test of the trained models on these images: no verdict on the factor
        return PER_IMAGE_ROLE
    if row.get("role") == "exploratory":
        return "exploratory"
    if math.isnan(row["p_holm"]):
        return "cannot tell"
    return "significant" if row["p_holm"] < alpha else "not significant"


# ------------------------------------------------------------------ sentences


def _amount(outcome: Outcome, value: float) -> str:
    shown = scaled(outcome, value)
    if outcome.unit == "points":
        return f"{shown:+.1f} points"
    if outcome.unit == "epochs":
        return f"{shown:+.1f} epochs"
    if outcome.unit == "s":
        return f"{shown:+.1f} s"
    return f"{shown:+.4f}"


def _ci(outcome: Outcome, row: dict[str, Any]) -> str:
    if math.isnan(row["ci_low"]):
        unit = _unit(row)
        if row["n"] >= 2 and row["difference"] != 0:
            return f"no spread: every {unit} pair differs by exactly {_amount(outcome, row['difference'])}"
        return f"no CI with one {unit}"
    digits = 4 if outcome.unit == "" else 1
    return f"95% CI {scaled(outcome, row['ci_low']):+.{digits}f} to {scaled(outcome, row['ci_high']):+.{digits}f}"


def _judgement(row: dict[str, Any]) -> str:
    if row["verdict"] == "exploratory":
        raw = f"raw p = {row['p']:.2g}" if not math.isnan(row["p"]) else "no p-value"
        return f"exploratory ({raw}; outside the primary family, so no verdict)"
    if row["verdict"] == "cannot tell":
        needed, unit = row.get("seeds_needed"), _unit(row)
        if needed:
            return (f"cannot tell with {row['n']} seed(s); a difference this size would need about {needed} seeds "
                    f"at 80% power")
        return f"cannot tell with {row['n']} {unit}(s); at least {MIN_SEEDS} are needed to estimate the spread"
    return f"{row['verdict']} ({_p_values(row)})"


def _unit(row: dict[str, Any]) -> str:
    """What a row's pairs are: seeds, or (kfold) folds."""
    return "fold" if row.get("unit") == "folds" else "seed"


def _p_values(row: dict[str, Any]) -> str:
    """Raw and Holm-adjusted p, so a CI that excludes zero beside 'not significant' is not a puzzle."""
    return f"p = {row['p']:.2g}; {row['p_holm']:.2g} after Holm over the study's {row['family_size']} {row['family']}"


def sentence(rows: list[dict[str, Any]]) -> str:
    """One sentence for one level against its reference, from its comparison rows."""
    by_outcome = {r["outcome"]: r for r in rows}
    first = rows[0]
    primary = next((r for r in rows if r.get("role") == "primary"), None)
    parts = []
    if primary:
        outcome = BY_KEY[primary["outcome"]]
        parts.append(f"{outcome.label} {_amount(outcome, primary['difference'])} ({_ci(outcome, primary)}), "
                     f"{_judgement(primary)} [primary]")
    image, auc = by_outcome.get(PER_IMAGE), by_outcome.get(PER_IMAGE_AUC)
    tests = [f"McNemar p = {image['p']:.2g}" if image and not math.isnan(image["p"]) else "",
             f"DeLong on their test ROC AUCs ({auc['level_mean']:.3f} vs {auc['reference_mean']:.3f}) p = {auc['p']:.2g}"
             if auc and not math.isnan(auc["p"]) else ""]
    if any(tests):
        ensembles = "fold ensembles" if any(r.get("unit") == "folds" for r in rows) else "seed ensembles"
        parts.append(f"the {ensembles} on these test images: {'; '.join(t for t in tests if t)} (these hold the "
                     "trained models fixed: they say whether these models differ on these images, not whether the "
                     "configurations do)")
    converge = by_outcome.get("convergence_epoch")
    if converge and converge is not primary:
        difference = converge["difference"]
        average = " on average" if converge["n"] > 1 else ""
        when = f"at the same epoch{average}" if difference == 0 else \
            f"{abs(difference):.1f} epochs {'later' if difference > 0 else 'earlier'}{average}"
        judgement = "" if converge["verdict"] == "cannot tell" and primary and primary["verdict"] == "cannot tell" \
            else f", {_judgement(converge)}"
        parts.append(f"converges {when} ({_ci(BY_KEY['convergence_epoch'], converge).replace('+', '')}){judgement}")
    return f"{first['level']} vs {first['reference']}: " + "; ".join(parts) + "."


def sentences(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        grouped.setdefault(row["comparison"], {}).setdefault(row["level"], []).append(row)
    return {comparison: [sentence(level_rows) for level_rows in levels.values()]
            for comparison, levels in grouped.items()}


# ------------------------------------------------------------------ the whole analysis


def analyse(out: Path) -> Analysis:
    study, plan, _ = load_study_folder(out)
    return compared(out, study, plan, *collect(out, study, plan))


def compared(out: Path, study: Study, plan: Plan, found: Found, missing: list[str]) -> Analysis:
    """The summaries, comparisons and conclusions of the runs' outcomes (no tables written)."""
    rows = compare_rows(out, study, plan, found)
    return Analysis(summarise(plan, found), rows, sentences(rows), missing, found)


def write_analysis(out: Path, mapper: Mapper = in_turn) -> Analysis:
    """Write results.csv, summary.csv, comparisons.csv and tables.md from the run folder (the figures and the
    methods text are drawn from the Analysis by medablate.report.outputs); the trials' seed ensembles are scored
    over `mapper`."""
    return AnalysisSteps(out, mapper).finish()


class AnalysisSteps:
    """write_analysis in two steps, so that a caller can start work that needs only the runs' outcomes (the
    comparisons' figures) between them: the first starts the seed ensembles (over the mapper's processes, where it
    has them) and reads every finished run's outcomes; finish() compares, waits for the ensembles and writes."""

    def __init__(self, out: Path, mapper: Mapper = in_turn) -> None:
        self.out = Path(out)
        self.study, self.plan, self.info = load_study_folder(self.out)
        claims.real_folder(self.out / layout.FIGURES, parent=False)  # before a figure or an ensemble is written
        self.ensembles = start_ensembles(self.out, self.study, self.plan, mapper)
        self.found, self.missing = collect(self.out, self.study, self.plan)

    def finish(self) -> Analysis:
        out, study, plan, info = self.out, self.study, self.plan, self.info
        analysis = compared(out, study, plan, self.found, self.missing)
        ensembles = self.ensembles()
        data_note = "synthetic phantom" if info.synthetic_data else str(info.data.source or "")
        result_rows = results.write_results(out, plan, data_note, ensembles)
        faults.point("analysis")
        for row in analysis.summary:
            row.update(summary_columns(ensembles.get(row["trial"])))
        columns = ["trial", "comparisons", "seeds", *(["folds"] if plan.folds else [])] + [
            f"{o.key}_{s}" for o in OUTCOMES for s in ("mean", "sd", "ci_low", "ci_high")] + ENSEMBLE_COLUMNS
        atomic.write_csv(out / layout.SUMMARY_CSV, analysis.summary, columns)
        atomic.write_csv(out / layout.COMPARISONS_CSV, analysis.rows, COMPARISON_COLUMNS)
        comparisons = {c.name: list(c.vary) for c in study.comparisons}
        base_flat = results.flatten({"model": to_plain(study.model), "training": to_plain(study.training)})
        results.write_tables(out, plan, study.name, comparisons, base_flat, result_rows, info.notes,
                             conclusions_section(analysis, len(plan.replicates), bool(plan.folds)))
        analysis.results = result_rows
        return analysis


def family_sentence(rows: list[dict[str, Any]]) -> str:
    """Which p-values were corrected together, in words."""
    sizes = {r["family"]: r["family_size"] for r in rows if r.get("family")}
    if "all tests" in sizes:
        return (f"p-values are corrected with Holm over all {sizes['all tests']} tests of the study "
                "(analysis.family: all).")
    size = sizes.get("primary tests", 0)
    return (f"Each comparison answers one primary outcome [primary]; Holm corrects over the study's {size} primary "
            "tests (one per level). Every other outcome is exploratory: its raw p-value is reported, never a verdict; "
            "training time and the highest validation accuracy at any epoch are descriptive only.")


def conclusions_section(analysis: Analysis, seeds: int, folds: bool = False) -> list[str]:
    lines = ["## Conclusions", ""]
    if seeds < MIN_SEEDS:
        lines += [f"> With {seeds} seed(s) this study cannot tell real differences from seed noise; "
                  f"use `seeds:` with at least {MIN_SEEDS} (5 is better) for verdicts.", ""]
    if analysis.missing:
        lines += [f"> Not finished, left out: {', '.join(analysis.missing)}.", ""]
    for comparison, texts in analysis.sentences.items():
        lines += [f"### {comparison}", ""] + [f"- {t}" for t in texts] + [""]
    paired = ("paired by fold (each fold's runs averaged over seeds), tested with the corrected resampled t-test "
              "(Nadeau & Bengio 2003), since the folds share training images" if folds else "paired by seed")
    lines += [f"Differences are level minus reference, {paired}. " + family_sentence(analysis.rows) +
              f" Details: {layout.COMPARISONS_CSV} (one row per level, outcome and test) and {layout.SUMMARY_CSV} "
              "(mean, SD and 95% CI per trial).", ""]
    return lines
