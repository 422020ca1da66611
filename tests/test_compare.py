"""Seeds and honest comparisons on a tiny phantom study: the files and sentences agree with each other."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from medablate.analysis import stats
from medablate.analysis.compare import analyse, write_analysis
from medablate.config.schema import load_study
from medablate.errors import UserError
from medablate.study.runner import StudyRunner

from conftest import medablate, write_study


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def three_seed_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compare")
    path = write_study(folder, seeds=[0, 1, 2], training={"epochs": 4, "batch_size": 16})
    study, _ = load_study(path)
    out = folder / "out"
    assert StudyRunner(study, out, Console(quiet=True)).run() == 0
    return out


def test_outputs_exist(three_seed_study: Path) -> None:
    for name in ("summary.csv", "comparisons.csv", "tables.md", "figures/loss.png", "figures/loss-outcomes.png"):
        assert (three_seed_study / name).exists(), name


def test_summary_matches_the_runs(three_seed_study: Path) -> None:
    summary = {r["trial"]: r for r in read_csv(three_seed_study / "summary.csv")}
    results = read_csv(three_seed_study / "results.csv")
    for trial in ("base", "CrossEntropyLoss"):
        values = [float(r["test_acc"]) for r in results if r["trial"] == trial and r["status"] == "done"]
        assert len(values) == 3 and summary[trial]["seeds"] == "3"
        mean, sd, low, high = stats.mean_sd_ci(values)
        assert float(summary[trial]["test_acc_mean"]) == pytest.approx(mean)
        assert float(summary[trial]["test_acc_sd"]) == pytest.approx(sd)
        assert float(summary[trial]["test_acc_ci_low"]) == pytest.approx(low)


def test_comparison_rows_are_paired_differences_with_holm(three_seed_study: Path) -> None:
    rows = read_csv(three_seed_study / "comparisons.csv")
    results = read_csv(three_seed_study / "results.csv")
    row = next(r for r in rows if r["outcome"] == "test_acc")
    assert (row["level"], row["reference"], row["n"], row["test"]) == ("CrossEntropyLoss", "BCEWithLogitsLoss", "3", "paired t")
    by = {(r["trial"], r["seed"]): float(r["test_acc"]) for r in results}
    diffs = [by[("CrossEntropyLoss", s)] - by[("base", s)] for s in ("0", "1", "2")]
    assert float(row["difference"]) == pytest.approx(np.mean(diffs))
    if np.ptp(diffs) > 0:
        assert float(row["p"]) == pytest.approx(stats.paired_p_value(diffs))
    primary = [r for r in rows if r["role"] == "primary"]
    assert [r["outcome"] for r in primary] == ["test_acc"]  # the default primary outcome with a test set
    p_values = [float(r["p"]) for r in primary]
    assert [float(r["p_holm"]) for r in primary] == pytest.approx(stats.holm(p_values))
    assert all(r["family_size"] == "1" and r["family"] == "primary tests" for r in primary)
    for r in primary:
        assert r["verdict"] == ("significant" if float(r["p_holm"]) < 0.05 else "not significant")
    others = [r for r in rows if r["role"] == "exploratory"]
    assert others and all(r["verdict"] == "exploratory" and r["p_holm"] == "nan" for r in others)
    assert any(r["outcome"] == "test_acc_per_image" and "McNemar" in r["test"] for r in rows)


def test_delong_compares_the_seed_ensembles_test_aucs(three_seed_study: Path) -> None:
    """Issue 22: the DeLong row equals stats.delong on the two seed ensembles' mean probabilities, computed here
    from the runs' predictions files; its AUCs are the ensembles' own (summary.csv), and each seed pair's own
    DeLong is in the detail. Its unit is the image, so it is never the primary test."""
    from medablate.analysis.ensembles import mean_predictions

    rows = read_csv(three_seed_study / "comparisons.csv")
    row = next(r for r in rows if r["outcome"] == "test_auc_per_image")
    assert "DeLong" in row["test"] and row["role"] != "primary"
    trials = {name: [three_seed_study / "trials" / f"{name}-seed{s}" for s in range(3)]
              for name in ("base", "CrossEntropyLoss")}
    names = ["normal", "pneumonia"]
    level, reference = (mean_predictions(trials[t], "test", names)[1] for t in ("CrossEntropyLoss", "base"))
    expected = stats.delong(level.labels == 1, level.probabilities[:, 1], reference.probabilities[:, 1])
    assert float(row["difference"]) == pytest.approx(expected.difference)
    assert float(row["p"]) == pytest.approx(expected.p) and float(row["ci_low"]) == pytest.approx(expected.ci_low)
    summary = {r["trial"]: r for r in read_csv(three_seed_study / "summary.csv")}
    assert float(row["level_mean"]) == pytest.approx(float(summary["CrossEntropyLoss"]["ensemble_test_roc_auc"]))
    assert row["detail"].count(" vs ") == 3 and "seeds: 3" in row["detail"]
    seed_level = next(r for r in rows if r["outcome"] == "test_auc")  # the AUC as an outcome over seeds
    assert seed_level["test"] == "paired t" and seed_level["n"] == "3"


def test_family_all_corrects_over_every_test_as_before(three_seed_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "all"
    shutil.copytree(three_seed_study, out, symlinks=True)
    info = json.loads((out / "study.json").read_text())
    info["study"]["analysis"]["family"] = "all"
    (out / "study.json").write_text(json.dumps(info))
    rows = analyse(out).rows
    tested = [r for r in rows if r["role"] not in ("descriptive", "models on these images")]
    assert [r["p_holm"] for r in tested] == pytest.approx(stats.holm([r["p"] for r in tested]), nan_ok=True)
    assert all(r["family_size"] == sum(not math.isnan(t["p"]) for t in tested) for r in tested)
    assert all(r["verdict"] in ("significant", "not significant") for r in tested if not math.isnan(r["p_holm"]))
    # issue 22: a test whose unit is the image (McNemar, DeLong) never joins the family nor gives a verdict
    images = [r for r in rows if r["outcome"] in ("test_acc_per_image", "test_auc_per_image")]
    assert len(images) == 2 and all(r["role"] == r["verdict"] == "models on these images" for r in images)
    assert all(math.isnan(r["p_holm"]) and not r["family"] for r in images)


def test_a_declared_primary_outcome_is_the_family_and_the_rest_is_exploratory(three_seed_study: Path,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "primary"
    shutil.copytree(three_seed_study, out, symlinks=True)
    info = json.loads((out / "study.json").read_text())
    info["study"]["comparisons"][0]["primary"] = "convergence_epoch"
    (out / "study.json").write_text(json.dumps(info))
    analysis = analyse(out)
    primary = [r for r in analysis.rows if r["role"] == "primary"]
    assert [r["outcome"] for r in primary] == ["convergence_epoch"] and primary[0]["family_size"] == 1
    test_row = next(r for r in analysis.rows if r["outcome"] == "test_acc")
    assert test_row["role"] == "exploratory" and test_row["verdict"] == "exploratory" and math.isnan(test_row["p_holm"])
    sentence = analysis.sentences["loss"][0]
    assert "epochs to converge" in sentence and "[primary]" in sentence and "1 primary tests" in sentence
    assert "significant" not in sentence.split("[primary]")[1]


def test_sentences_repeat_the_numbers_of_the_table(three_seed_study: Path) -> None:
    analysis = analyse(three_seed_study)
    [text] = analysis.sentences["loss"]
    row = next(r for r in analysis.rows if r["outcome"] == "test_acc")
    assert text.startswith("CrossEntropyLoss vs BCEWithLogitsLoss: test accuracy")
    assert f"{row['difference'] * 100:+.1f} points" in text
    assert f"95% CI {row['ci_low'] * 100:+.1f} to {row['ci_high'] * 100:+.1f}" in text
    assert row["verdict"] in text and f"p = {row['p']:.2g}; {row['p_holm']:.2g} after Holm" in text
    assert text in (three_seed_study / "tables.md").read_text()


def test_compare_works_on_a_partly_finished_study(three_seed_study: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(three_seed_study, partial, symlinks=True)
    shutil.rmtree(partial / "trials" / "CrossEntropyLoss-seed2")
    result = medablate("compare", str(partial))
    assert result.returncode == 0, result.stderr
    assert "CrossEntropyLoss-seed2 (pending)" in " ".join(result.stderr.split())
    row = next(r for r in read_csv(partial / "comparisons.csv") if r["outcome"] == "test_acc")
    assert row["n"] == "2" and row["verdict"] == "cannot tell"
    assert "Not finished, left out: CrossEntropyLoss-seed2" in (partial / "tables.md").read_text()


def test_one_seed_gives_no_verdict(tmp_path: Path) -> None:
    study, _ = load_study(write_study(tmp_path, training={"epochs": 2, "batch_size": 16}))
    StudyRunner(study, tmp_path / "out", Console(quiet=True)).run()
    analysis = write_analysis(tmp_path / "out")
    assert all(r["verdict"] == "cannot tell" for r in analysis.rows if r["role"] == "primary")
    assert all(r["verdict"] in ("exploratory", "descriptive", "models on these images") for r in analysis.rows
               if r["role"] != "primary")
    assert {r["outcome"] for r in analysis.rows if r["verdict"] == "descriptive"} == {"seconds", "highest_val_acc"}
    assert "cannot tell with 1 seed(s)" in analysis.sentences["loss"][0]
    assert "cannot tell real differences from seed noise" in (tmp_path / "out" / "tables.md").read_text()


def test_reference_can_be_named_and_must_be_a_level(tmp_path: Path) -> None:
    comparisons = [{"name": "loss", "vary": {"training.loss": ["BCEWithLogitsLoss", "CrossEntropyLoss"]},
                    "reference": "CrossEntropyLoss"}]
    study, _ = load_study(write_study(tmp_path, comparisons=comparisons, training={"epochs": 1, "batch_size": 16}))
    StudyRunner(study, tmp_path / "out", Console(quiet=True)).run()
    row = analyse(tmp_path / "out").rows[0]
    assert (row["level"], row["reference"]) == ("BCEWithLogitsLoss", "CrossEntropyLoss")
    comparisons[0]["reference"] = "MSELoss"
    bad, _ = load_study(write_study(tmp_path, comparisons=comparisons))
    with pytest.raises(UserError, match="not one of its levels"):
        StudyRunner(bad, tmp_path / "other", Console(quiet=True))


def test_the_seed_ensemble_is_the_mean_of_the_seeds_probabilities(three_seed_study: Path) -> None:
    from sklearn.metrics import roc_auc_score

    summary = {r["trial"]: r for r in read_csv(three_seed_study / "summary.csv")}
    results = read_csv(three_seed_study / "results.csv")
    for trial in ("base", "CrossEntropyLoss"):
        seeds = [read_csv(three_seed_study / "trials" / f"{trial}-seed{s}" / "predictions_test.csv") for s in range(3)]
        mean = np.mean([[float(r["prob_pneumonia"]) for r in rows] for rows in seeds], axis=0)
        labels = [int(r["label"]) for r in seeds[0]]
        record = json.loads((three_seed_study / "ensembles" / trial / "metrics.json").read_text())
        auc = record["evaluation"]["test"]["at_0.5"]["roc_auc"]
        assert auc == pytest.approx(roc_auc_score(labels, mean)) and record["seeds"] == [0, 1, 2]
        assert float(summary[trial]["ensemble_test_roc_auc"]) == pytest.approx(auc)
        row = next(r for r in results if r["run"] == f"{trial}-ensemble")
        assert row["status"] == "ensemble" and float(row["test_acc"]) == pytest.approx(
            np.mean((mean >= 0.5) == np.array(labels)))
        saved = read_csv(three_seed_study / "ensembles" / trial / "predictions_test_ensemble.csv")
        assert [float(r["prob_pneumonia"]) for r in saved] == pytest.approx(list(mean))
        assert "ci95" in record["evaluation"]["test"]["at_threshold"]


def test_evaluate_against_another_run_compares_them_image_by_image(three_seed_study: Path, tmp_path: Path) -> None:
    """Issue 22: `evaluate RUN --against OTHER` scores both checkpoints on the same images and compares them: DeLong
    for the ROC AUCs (checked here against stats.delong on the two written prediction files) and McNemar."""
    out = tmp_path / "study"
    shutil.copytree(three_seed_study, out, symlinks=True)
    here, there = out / "trials" / "base-seed0", out / "trials" / "CrossEntropyLoss-seed0"
    result = medablate("evaluate", str(here), "--against", str(there))
    assert result.returncode == 0, result.stderr
    assert "DeLong" in result.stdout and "not their configurations" in " ".join(result.stdout.split())
    record = json.loads((here / "evaluations" / "study-test.json").read_text())["comparison"]
    rows = [read_csv(run / "evaluations" / "study-test_predictions.csv") for run in (here, there)]
    labels = np.array([int(r["label"]) for r in rows[0]])
    expected = stats.delong(labels == 1, *(np.array([float(r["prob_pneumonia"]) for r in rs]) for rs in rows))
    assert record["delong_p"] == pytest.approx(expected.p) and record["roc_auc"] == pytest.approx(expected.auc_a)
    right = [np.array([int(r["decision"]) for r in rs]) == labels for rs in rows]
    assert (record["right_only_here"], record["right_only_there"]) == (int((right[0] & ~right[1]).sum()),
                                                                       int((~right[0] & right[1]).sum()))
    assert medablate("evaluate", str(here), "--against", str(out / "trials" / "nowhere")).returncode == 2
