"""Seed ensembles: the mean of a trial's seeds' probabilities, evaluated like a run (what a practitioner deploys).

Costs no training: it reads the seeds' saved predictions. The threshold is chosen on the ensemble's validation
probabilities with the study's rule, as for a run, and applied unchanged to test. With k-fold cross-validation
the ensemble is every fold's model of every seed (the fold ensemble); each image of the pool validated in one fold
per repeat, so its validation set is the out-of-fold predictions (each image's mean over the runs that validated
on it). Written to
DIR/ensembles/<trial>/ (metrics.json, predictions_val_ensemble.csv, predictions_test_ensemble.csv).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medablate.config.schema import Study
from medablate.core import children
from medablate.core.children import Mapper, in_turn
from medablate.execute.plan import Plan, Trial
from medablate.folder import claims, rundir
from medablate.folder.layout import ensemble_dir, predictions_file
from medablate.folder.records import EnsembleRecord, EvaluationReport
from medablate.scoring.clinical import Predictions, evaluate_trial


def mean_predictions(run_dirs: list[Path], split: str, names: list[str]) -> tuple[list[str], Predictions] | None:
    found = [rundir.read_prediction_arrays(rundir.predictions_file(d, split), names) for d in run_dirs]
    if any(f is None for f in found):
        return None
    ids, labels = found[0][0], found[0][1]  # type: ignore[index]
    if any(f[0] != ids or not np.array_equal(f[1], labels) for f in found):  # type: ignore[index]
        return None  # the seeds were scored on different images: no ensemble
    probabilities = np.mean([f[2] for f in found], axis=0)  # type: ignore[index]
    return ids, Predictions(labels, probabilities, decide(probabilities))


def decide(probabilities: np.ndarray) -> np.ndarray:
    """An ensemble's decisions at the loss's rule: P(positive) >= 0.5 for two classes, the most probable otherwise."""
    return (probabilities[:, 1] >= 0.5).astype(int) if probabilities.shape[1] == 2 else probabilities.argmax(1)


def out_of_fold(run_dirs: list[Path], names: list[str]) -> tuple[list[str], Predictions] | None:
    """kfold: each pool image's mean probabilities over the runs that validated on it."""
    found = [rundir.read_prediction_arrays(rundir.predictions_file(d, "val"), names) for d in run_dirs]
    if any(f is None for f in found):
        return None
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    labels: dict[str, int] = {}
    for ids, image_labels, probabilities, _ in found:  # type: ignore[misc]
        for image, label, row in zip(ids, image_labels, probabilities, strict=True):
            sums[image] = sums.get(image, 0) + row
            counts[image] = counts.get(image, 0) + 1
            labels[image] = int(label)
    ids = list(sums)
    probabilities = np.array([sums[i] / counts[i] for i in ids])
    return ids, Predictions(np.array([labels[i] for i in ids]), probabilities, decide(probabilities))


def ensemble_trial(out: Path, study: Study, plan: Plan, trial: Trial) -> EnsembleRecord | None:
    """Evaluate the mean of the finished runs of one trial (2 or more), write its files, return its record."""
    runs = zip(plan.replicates, plan.run_dirs(out, trial), strict=True)
    finished = [(replicate, d) for replicate, d in runs if rundir.finished_metrics(d)]
    if len(finished) < 2 or (plan.folds and len(finished) < len(plan.replicates)):  # kfold: every fold, or none
        return None
    run_dirs = [d for _, d in finished]
    seeds = sorted({seed for (seed, _), _ in finished})
    names = list(rundir.read_config(run_dirs[0])["resolved"]["class_names"])
    val = out_of_fold(run_dirs, names) if plan.folds else mean_predictions(run_dirs, "val", names)
    test = mean_predictions(run_dirs, "test", names)
    if val is None:
        return None
    report, threshold = evaluate_trial(val[1], test[1] if test else None, study.evaluation_of(trial.config), names)
    folder = claims.real_folder(ensemble_dir(out, trial.id))
    for split, found in (("val", val), ("test", test)):
        if found is not None:
            ids, p = found
            rundir.write_predictions(predictions_file(folder, split, "_ensemble"), ids, p.labels, p.probabilities,
                                     p.decisions, names, threshold)
    method = ("mean of every fold's and seed's class probabilities (the fold ensemble); threshold chosen on the "
              "out-of-fold validation predictions" if plan.folds else
              "mean of the seeds' class probabilities; threshold chosen on the ensemble's validation set")
    record = EnsembleRecord(format=rundir.FORMAT, trial=trial.id, seeds=seeds, runs=[d.name for d in run_dirs],
                            threshold=threshold, evaluation=EvaluationReport.model_validate(report),
                            class_names=names, method=method)
    rundir.write_metrics(folder, record)
    return record


def start_ensembles(out: Path, study: Study, plan: Plan, mapper: Mapper = in_turn
                    ) -> Callable[[], dict[str, EnsembleRecord]]:
    """Every trial's seed ensemble (trials with fewer than two finished seeds have none), each trial's over mapper,
    begun at once where mapper has processes; returns what waits for the records (by trial id)."""
    pending = children.start(mapper, partial(ensemble_trial, out, study, plan), plan.trials)
    return lambda: {trial.id: record for trial, record in zip(plan.trials, pending(), strict=True)
                    if record is not None}


def summary_columns(record: EnsembleRecord | None) -> dict[str, Any]:
    """The ensemble's headline numbers for summary.csv and results.csv (test when there is one, else validation)."""
    if record is None:
        return {}
    values: dict[str, Any] = {"ensemble_seeds": len(record.seeds), "ensemble_threshold": record.threshold}
    for split, scores in (("val", record.evaluation.val), ("test", record.evaluation.test)):
        for key in ("accuracy", "roc_auc", "sensitivity", "specificity"):
            values[f"ensemble_{split}_{key}"] = getattr(scores.at_rule, key) if scores else None
    return values


ENSEMBLE_COLUMNS = ["ensemble_seeds", "ensemble_threshold"] + [f"ensemble_{s}_{k}" for s in ("val", "test")
                                                               for k in ("accuracy", "roc_auc", "sensitivity",
                                                                         "specificity")]
