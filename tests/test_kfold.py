"""k-fold cross-validation (issue 22): every fold x seed is a run, comparisons use the corrected resampled t-test
over folds, the fold ensemble scores the test set; and on the shared chest X-rays, 5 folds x 2 repeats grouped by
patient, a SIGKILL then a rerun gives the numbers of an uninterrupted study."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medablate.analysis import stats
from medablate.data.split import KERMANY_PATIENTS

from conftest import require_shared_data, write_study
from test_cli import medablate, medablate_process
from test_study import _kill_mid_trial, read_csv, without_seconds

FOLDS = {"method": "kfold", "folds": 3, "repeats": 1, "seed": 0}


@pytest.fixture(scope="module")
def kfold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two trials x three folds of the tiny phantom study (one seed: averaging over seeds is checked without
    training, below), with a test set."""
    root = tmp_path_factory.mktemp("kfold")
    study = write_study(root, data={"image_size": 32, "phantom": {"count_per_class": 40}, "split": FOLDS})
    # one thread: the numbers a worker process or a Ray task (one thread each) must repeat
    assert medablate("run", str(study), "--out", str(root / "out"), "--threads", "1").returncode == 0
    return root / "out"


def test_every_fold_of_every_seed_is_a_run_that_validates_on_its_own_fold(kfold: Path) -> None:
    rows = read_csv(kfold / "results.csv")
    runs = [r for r in rows if r["status"] == "done"]
    assert len(runs) == 2 * 3 and {r["fold"] for r in runs} == {"rep1-fold1", "rep1-fold2", "rep1-fold3"}
    split = read_csv(kfold / "split.csv")
    assert {r["split"] for r in split} == {"cv"} and len(split) == 80  # the test set is the study's own test: section
    for run in runs:
        fold = int(run["fold"].rsplit("fold", 1)[1])
        folder = kfold / "trials" / run["run"]
        validated = {r["image"] for r in read_csv(folder / "predictions_val.csv")}
        assert validated == {r["file"] for r in split if r["fold_rep1"] == str(fold)}
        record = json.loads((folder / "metrics.json").read_text())
        assert record["fold"] == [1, fold] and record["train_images"] + record["val_images"] == 80
        assert record["val_images"] == len(validated)
        assert len(read_csv(folder / "predictions_test.csv")) == 20  # every fold's model scores the same test set


def test_the_comparison_is_the_corrected_resampled_t_over_fold_means(kfold: Path) -> None:
    rows = read_csv(kfold / "results.csv")
    per_fold: dict[str, dict[str, list[float]]] = {}
    ratios = []
    for row in rows:
        if row["status"] == "done":
            per_fold.setdefault(row["trial"], {}).setdefault(row["fold"], []).append(float(row["test_acc"]))
            if row["trial"] == "CrossEntropyLoss":
                record = json.loads((kfold / "trials" / row["run"] / "metrics.json").read_text())
                ratios.append(record["val_images"] / record["train_images"])
    folds = sorted(per_fold["base"])
    d = np.array([np.mean(per_fold["CrossEntropyLoss"][f]) - np.mean(per_fold["base"][f]) for f in folds])
    ratio = float(np.mean(ratios))
    # by hand: t = mean / sqrt((1/J + n_test/n_train) var), J - 1 degrees of freedom
    t = d.mean() / math.sqrt((1 / len(d) + ratio) * d.var(ddof=1))
    from scipy import stats as st

    primary = next(r for r in read_csv(kfold / "comparisons.csv") if r["outcome"] == "test_acc")
    assert primary["unit"] == "folds" and primary["n"] == "3" and primary["role"] == "primary"
    assert primary["test"].startswith("corrected resampled t")
    assert float(primary["difference"]) == pytest.approx(d.mean(), abs=1e-12)
    assert float(primary["p"]) == pytest.approx(2 * st.t.sf(abs(t), len(d) - 1), rel=1e-9)
    assert float(primary["p"]) == pytest.approx(stats.corrected_resampled_t(d, ratio).p, rel=1e-12)
    summary = {r["trial"]: r for r in read_csv(kfold / "summary.csv")}
    assert summary["base"]["folds"] == "3" and summary["base"]["seeds"] == "1"
    assert float(summary["base"]["test_acc_mean"]) == pytest.approx(np.mean([np.mean(v) for v in per_fold["base"].values()]))
    tables = (kfold / "tables.md").read_text()
    assert "paired by fold" in tables and "Nadeau" in (kfold / "methods.md").read_text()


def test_the_fold_ensemble_is_every_run_and_chose_its_threshold_out_of_fold(kfold: Path) -> None:
    record = json.loads((kfold / "ensembles" / "base" / "metrics.json").read_text())
    assert len(record["runs"]) == 3 and record["seeds"] == [0] and "out-of-fold" in record["method"]
    val = read_csv(kfold / "ensembles" / "base" / "predictions_val_ensemble.csv")
    assert len(val) == 80 and len({r["image"] for r in val}) == 80  # every pool image once
    first = next(r for r in val if r["image"] == val[0]["image"])
    own = [float(r["prob_pneumonia"]) for run in record["runs"]
           for r in read_csv(kfold / "trials" / run / "predictions_val.csv") if r["image"] == first["image"]]
    assert len(own) == 1 and float(first["prob_pneumonia"]) == pytest.approx(own[0], abs=1e-6)
    assert record["evaluation"]["test"]["at_0.5"]["count"] == 20


def test_each_fold_is_averaged_over_its_seeds_before_the_folds_are_compared(tmp_path: Path) -> None:
    from medablate.analysis import compare
    from medablate.analysis.outcomes import OUTCOMES, TEST_OVER_TRAIN
    from medablate.config.schema import load_study
    from medablate.execute.plan import expand

    study, _ = load_study(write_study(tmp_path, seeds=[0, 1], data={"split": {**FOLDS, "repeats": 2}}))
    plan = expand(study)
    assert len(plan.replicates) == 2 * 6 and len(plan.runs) == 24
    rng = np.random.default_rng(0)
    found = {(t.id, r): {o.key: float(rng.uniform(0.5, 1.0)) for o in OUTCOMES} | {TEST_OVER_TRAIN: 0.5}
             for t in plan.trials for r in plan.replicates}
    level, reference = plan.trials[1], plan.trials[0]
    folds = [[(seed, fold) for seed in plan.seeds] for fold in plan.folds]
    d = np.array([np.mean([found[(level.id, r)]["test_acc"] - found[(reference.id, r)]["test_acc"] for r in fold])
                  for fold in folds])
    row = next(r for r in compare.compare_rows(tmp_path / "none", study, plan, found) if r["outcome"] == "test_acc")
    assert row["n"] == 6 and row["unit"] == "folds"
    assert row["difference"] == pytest.approx(d.mean()) and row["p"] == pytest.approx(stats.corrected_resampled_t(d, 0.5).p)
    means = [np.mean([found[(reference.id, r)]["test_acc"] for r in fold]) for fold in folds]
    summary = compare.summarise(plan, found)[0]
    assert summary["seeds"] == 2 and summary["folds"] == 6
    assert summary["test_acc_mean"] == pytest.approx(np.mean(means))
    assert summary["test_acc_sd"] == pytest.approx(np.std(means, ddof=1))


@pytest.mark.slow  # two more studies in processes of their own; the folds reach a worker as a run's fold only
@pytest.mark.parametrize("executor", [("--workers", "2"), ("--executor", "ray")], ids=["workers", "ray"])
def test_workers_and_ray_train_the_folds_with_the_numbers_of_one_thread(kfold: Path, tmp_path: Path,
                                                                         executor: tuple[str, str]) -> None:
    if executor[1] == "ray":
        pytest.importorskip("ray")
    study = kfold.parent / "study.yaml"
    result = medablate_process("run", str(study), "--out", str(tmp_path / "out"), *executor)
    assert result.returncode == 0, result.stderr
    assert without_seconds(read_csv(tmp_path / "out" / "results.csv")) == without_seconds(read_csv(kfold / "results.csv"))


@pytest.mark.slow  # trains 20 runs and decodes 5216 X-rays once (the decode cache serves the rest)
def test_kfold_on_the_shared_xrays_grouped_by_patient_resumes_after_sigkill(tmp_path: Path) -> None:
    sections: dict[str, Any] = {
        "data": {"path": str(require_shared_data()), "image_size": 32,
                 "split": {"method": "kfold", "folds": 5, "repeats": 2, "group_by": {"regex": KERMANY_PATIENTS}}},
        "test": None, "comparisons": [], "training": {"epochs": 3, "batch_size": 64, "checkpoint_every": "epoch"}}
    study = write_study(tmp_path, **sections)
    command = [sys.executable, "-m", "medablate.cli", "run", str(study), "--out"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert medablate("run", str(study), "--out", str(clean)).returncode == 0
    _kill_mid_trial(command + [str(killed)], killed, "base-rep2-fold1-seed0", after_epochs=1)
    assert not (killed / "trials" / "base-rep2-fold1-seed0" / "metrics.json").exists()
    rerun = medablate("run", str(study), "--out", str(killed))
    assert rerun.returncode == 0, rerun.stderr
    assert without_seconds(read_csv(killed / "results.csv")) == without_seconds(read_csv(clean / "results.csv"))
    split = read_csv(clean / "split.csv")
    for column in ("fold_rep1", "fold_rep2"):
        fold_of: dict[str, set[str]] = {}
        for row in split:
            if row[column]:
                fold_of.setdefault(row["patient"], set()).add(row[column])
        assert len(fold_of) > 2500 and all(len(f) == 1 for f in fold_of.values())  # each patient in one fold
    with (clean / "results.csv").open() as handle:
        done = [r for r in csv.DictReader(handle) if r["status"] == "done"]
    assert len(done) == 10 and all(float(r["val_acc"]) > 0.7 for r in done)
