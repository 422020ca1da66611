"""Right numbers, part 2 (issue 24): what a new user hit in a day. Each test failed on e2123a6."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from medablate.analysis import compare, stats
from medablate.folder import rundir
from medablate.cli import app
from medablate.config.schema import load_study
from medablate.errors import UserError
from medablate.train.optim import build_optimizer, build_scheduler
from medablate.analysis.outcomes import OUTCOMES
from medablate.execute.plan import expand

from conftest import REPO, write_study

COURSE = REPO / "examples" / "course-hw2.yaml"


def flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------ 1. a StepLR that never steps


def learning_rates(training, steps: int) -> list[float]:  # type: ignore[no-untyped-def]
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(training.optimizer, [parameter])
    scheduler = build_scheduler(training.scheduler, optimizer, training.epochs, 1)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("epochs", [3, 5])
def test_the_course_steplr_steps_in_a_short_run(epochs: int) -> None:
    study, _ = load_study(COURSE, [f"training.epochs={epochs}"])
    trial = next(t for t in expand(study).trials if t.id == "StepLR")
    scheduler = trial.config.training.scheduler
    assert scheduler.kwargs["step_size"] < epochs
    assert scheduler.scaled_from == {"epochs": 40, "step_size": 10} and scheduler.written_for_epochs == epochs
    rates = learning_rates(trial.config.training, epochs)
    assert len(set(rates)) > 1, rates  # the learning rate changes within the run


def test_the_course_steplr_is_unchanged_at_its_own_length() -> None:
    study, _ = load_study(COURSE)
    trial = next(t for t in expand(study).trials if t.id == "StepLR")
    assert trial.config.training.scheduler.kwargs["step_size"] == 10
    assert trial.config.training.scheduler.scaled_from is None


@pytest.mark.parametrize("scheduler, key", [
    ("{name: StepLR, step_size: 10}", "training.scheduler.step_size is 10"),
    ("{name: MultiStepLR, milestones: [2, 8]}", "training.scheduler.milestones has [8]"),
    ("{name: LinearLR, start_factor: 0.1, total_iters: 9}", "training.scheduler.total_iters is 9"),
])
def test_a_step_count_the_run_never_reaches_is_refused_naming_the_key(tmp_path: Path, scheduler: str, key: str) -> None:
    path = write_study(tmp_path)
    with pytest.raises(UserError) as caught:
        load_study(path, [f"training.scheduler={scheduler}", "training.epochs=5"])
    assert key in str(caught.value)
    result = CliRunner().invoke(app, ["run", str(path), "--set", f"training.scheduler={scheduler}", "--dry-run"])
    assert result.exit_code == 2 and key in flat(result.output)


def test_dry_run_says_which_schedule_was_scaled() -> None:
    result = CliRunner().invoke(app, ["run", str(COURSE), "--set", "training.epochs=5", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "StepLR step_size 10 -> 1 (written for 40 epochs" in flat(result.output)


def test_a_scaled_schedule_is_recorded_in_config_yaml_and_keeps_old_runs_valid() -> None:
    from medablate.execute.prepare import config_differences

    study, _ = load_study(COURSE)
    trial = next(t for t in expand(study).trials if t.id == "StepLR")
    new = {"training": yaml.safe_load(yaml.safe_dump(trial.config.training.model_dump(mode="json")))}
    old = {"training": {k: v for k, v in new["training"].items()}}
    old["training"]["scheduler"] = {k: v for k, v in new["training"]["scheduler"].items()
                                    if k not in ("written_for_epochs", "scaled_from")}
    assert new["training"]["scheduler"]["written_for_epochs"] == 40
    assert config_differences(old, new) == []  # a run written before the bookkeeping keys is the same run


# ------------------------------------------------------------------ 2. one definition per per-image row


def write_run(out: Path, run: str, labels: np.ndarray, positive: np.ndarray) -> None:
    run_dir = rundir.trial_dir(out, run)
    run_dir.mkdir(parents=True)
    probabilities = np.stack([1 - positive, positive], axis=1)
    rundir.write_predictions(rundir.predictions_file(run_dir, "test"), [f"img{i}" for i in range(len(labels))],
                             labels, probabilities, (positive > 0.5).astype(int), ["normal", "pneumonia"])


def test_the_per_image_row_counts_and_difference_agree(tmp_path: Path) -> None:
    """The issue's case: with a strict majority over 2 seeds, ties count as wrong, so the counts said the level
    was better while the mean difference said it was worse."""
    path = write_study(tmp_path, seeds=[0, 1])
    study, _ = load_study(path)
    plan = expand(study)
    level, reference = plan.trials[1], plan.trials[0]
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    sure = np.where(labels == 1, 0.9, 0.1)
    out = tmp_path / "out"
    # reference: both seeds right on most images; the level: one seed of two right on many (ties)
    for seed in (0, 1):
        ref = np.where(rng.random(400) < 0.15, 1 - sure, sure)
        lev = np.where((rng.random(400) < 0.5) & (np.arange(400) % 3 == 0), 1 - sure, sure)
        write_run(out, rundir.run_id(reference.id, seed), labels, ref)
        write_run(out, rundir.run_id(level.id, seed), labels, lev)
    row = compare.image_row(study, *([rundir.trial_dir(out, rundir.run_id(trial.id, s)) for s in (0, 1)]
                                     for trial in (level, reference)))
    assert row is not None
    detail = row["detail"]
    only_level = int(detail.split("level's seed ensemble: ")[1].split(",")[0])
    only_ref = int(detail.split("reference's: ")[1].split(";")[0])
    assert row["difference"] == pytest.approx((only_level - only_ref) / row["n"])
    assert row["difference"] == pytest.approx(row["level_mean"] - row["reference_mean"])
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    assert (only_level > only_ref) == (row["difference"] > 0)


# ------------------------------------------------------------------ 3. intervals inside what is possible


def test_a_two_seed_interval_stays_inside_the_metrics_range() -> None:
    mean, _, low, high = stats.mean_sd_ci([0.55, 0.99], bounds=(0.0, 1.0))
    assert 0 <= low <= mean <= high <= 1
    assert stats.mean_sd_ci([0.55, 0.99])[3] > 1  # the t interval alone would pass 100%


def test_summary_intervals_respect_each_outcomes_range(tmp_path: Path) -> None:
    path = write_study(tmp_path, seeds=[0, 1])
    study, _ = load_study(path)
    plan = expand(study)
    values = {"test_acc": (0.55, 0.99), "test_loss": (0.01, 0.9), "test_auc": (0.7, 1.0), "val_acc": (0.2, 1.0),
              "test_decision_acc": (0.5, 0.99), "test_sensitivity": (0.4, 1.0), "test_specificity": (0.3, 0.99),
              "robust_acc": (0.5, 0.98), "robust_auc": (0.6, 0.999),
              "highest_val_acc": (0.6, 1.0), "val_loss_at_best": (0.02, 1.5), "best_epoch": (1, 3),
              "convergence_epoch": (1, 3), "stability": (0.0, 0.3), "seconds": (1.0, 300.0)}
    found = {(t.id, replicate): {k: v[i] for k, v in values.items()} for t in plan.trials
             for i, replicate in enumerate(plan.replicates)}
    for row in compare.summarise(plan, found):
        for outcome in OUTCOMES:
            low, high = row[f"{outcome.key}_ci_low"], row[f"{outcome.key}_ci_high"]
            assert outcome.bounds[0] <= low <= high <= outcome.bounds[1], (outcome.key, low, high)


def test_difference_intervals_of_accuracies_stay_within_100_points(tmp_path: Path) -> None:
    path = write_study(tmp_path, seeds=[0, 1])
    study, _ = load_study(path)
    outcome = next(o for o in OUTCOMES if o.key == "test_acc")
    row = compare.seed_row(study, outcome, np.array([0.99, 0.2]), np.array([0.1, 0.9]))
    assert -1 <= row["ci_low"] <= row["difference"] <= row["ci_high"] <= 1
    assert not math.isnan(row["ci_low"])


# ------------------------------------------------------------------ 4-6, 8, 9: one finished phantom study


REFERENCE = {"name": "Kermany et al. 2018", "metrics": {"accuracy": 0.928, "sensitivity": 0.932, "specificity": 0.901},
             "test_set": "the official 624-image test split"}


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory: pytest.TempPathFactory, every_figure_format: None) -> Path:
    """One seed, a fixed 0.5 threshold, a reference: the wording cases of the issue."""
    folder = tmp_path_factory.mktemp("wording")
    path = write_study(folder, training={"epochs": 2}, references=[REFERENCE],
                       comparisons=[{"name": "loss", "vary": {"training.loss": ["BCEWithLogitsLoss",
                                                                                "CrossEntropyLoss"]}}])
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(folder / "out")])
    assert result.exit_code == 0, result.output
    return folder / "out"


def test_best_trial_figures_of_a_synthetic_study_say_so_and_draw_no_reference(phantom_study: Path) -> None:
    figures = phantom_study / "figures"
    for stem in ("best-trial-roc", "best-trial-curves", "best-trial-confusion"):
        assert "SYNTHETIC" in (figures / f"{stem}.svg").read_text(), stem
    assert "published" not in (figures / "best-trial-roc.svg").read_text()
    report = (phantom_study / "report.md").read_text()
    assert "published references are not drawn" in report


def test_references_are_drawn_on_the_roc_of_real_data(tmp_path: Path, every_figure_format: None) -> None:
    from medablate.report import plots

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    plots.roc_band(tmp_path / "roc", {"test": [(labels, np.clip(labels * 0.6 + rng.random(200) * 0.5, 0, 1))]},
                   "real", [("Kermany 2018", 0.93, 0.90)])
    assert "Kermany 2018 (published)" in (tmp_path / "roc.svg").read_text()


def test_the_wording_says_what_was_done(phantom_study: Path) -> None:
    report = (phantom_study / "report.md").read_text()
    methods = (phantom_study / "methods.md").read_text()
    assert "not chosen on data" in report and "chosen on validation and applied unchanged" not in report
    assert "fixed at 0.5 (not chosen on data)" in methods and "was chosen on validation" not in methods
    assert "over the 0 primary tests" not in methods and "no test was made" in methods
    assert "on average" not in " ".join(line for line in report.splitlines() if "converges" in line)
    assert "(Grad-CAM" not in report and "saliency (" not in report
    examples = [line for line in report.splitlines() if line.startswith("![correct") or line.startswith("![wrong")]
    assert examples and all(" P(" in line for line in examples)
    assert " ;" not in report and " ;" not in methods


def test_evaluate_gives_both_matrices_and_the_per_image_predictions(phantom_study: Path) -> None:
    run_dir = phantom_study / "trials" / "base-seed0"
    result = CliRunner().invoke(app, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "confusion matrix at the loss's rule (0.5)" in text and "confusion matrix at the validated threshold" in text
    predictions = run_dir / "evaluations" / "study-test_predictions.csv"
    rows = rundir.read_predictions(predictions)
    assert rows and {"image", "label", "prob_normal", "prob_pneumonia", "decision", "decision_at_threshold"} <= set(rows[0])
    assert str(predictions) in text.replace(" ", "") or "study-test_predictions.csv" in text


def test_evaluate_accepts_a_one_class_set_and_names_what_it_cannot_compute(phantom_study: Path,
                                                                             tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "normal-only" / "NORMAL").mkdir(parents=True)
    for i in range(8):
        Image.fromarray(np.full((32, 32), 20 * i, np.uint8)).save(tmp_path / "normal-only" / "NORMAL" / f"{i}.png")
    result = CliRunner().invoke(app, ["evaluate", str(phantom_study / "trials" / "base-seed0"), "--data",
                                      str(tmp_path / "normal-only")])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "specificity" in text and "roc_auc" in text and "cannot be computed without the other class" in text
    saved = (phantom_study / "trials" / "base-seed0" / "evaluations" / "normal-only.json").read_text()
    assert '"classes_present": [\n    "normal"\n  ]' in saved


def test_status_shows_each_runs_disk_and_finished_runs_keep_best_only(phantom_study: Path) -> None:
    result = CliRunner().invoke(app, ["status", str(phantom_study)])
    assert result.exit_code == 0 and "disk" in result.output and "KiB" in result.output
    run_dir = phantom_study / "trials" / "base-seed0"
    best = (run_dir / "best.pt").resolve().stat().st_size
    last = (run_dir / "last.pt").resolve().stat().st_size
    assert last < best / 4  # the final last.pt keeps the history, not the weights (keep_checkpoints: best)


def test_keep_checkpoints_last_keeps_the_final_weights(tmp_path: Path) -> None:
    path = write_study(tmp_path, training={"epochs": 1, "keep_checkpoints": "last"}, comparisons=[])
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "out" / "trials" / "base-seed0"
    assert (run_dir / "last.pt").resolve().stat().st_size > (run_dir / "best.pt").resolve().stat().st_size / 2
    result = CliRunner().invoke(app, ["evaluate", str(run_dir), "--checkpoint", "last"])
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------ 7, 11-14: data, help and messages


def test_a_kaggle_root_holding_train_only_is_its_training_folder(tmp_path: Path) -> None:
    from PIL import Image

    from medablate.config.schema import DataConfig
    from medablate.data import data_index, load_data

    for name in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "root" / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(tmp_path / "root" / "train" / name / f"{i}.png")
    config = DataConfig(path=tmp_path / "root", image_size=16)
    assert data_index(config) == ("image-folder", {"train": {"NORMAL": 3, "PNEUMONIA": 3}})
    data = load_data(config)
    assert data.class_names == ["NORMAL", "PNEUMONIA"] and len(data) == 6 and data.preset is None


def test_mixed_inputs_are_said_once_with_counts(tmp_path: Path) -> None:
    from PIL import Image

    from medablate.data.sources import image_folder

    (tmp_path / "xr" / "a").mkdir(parents=True)
    (tmp_path / "xr" / "b").mkdir(parents=True)
    Image.new("RGB", (40, 20), (200, 10, 10)).save(tmp_path / "xr" / "a" / "wide.png")
    Image.new("L", (16, 16), 50).save(tmp_path / "xr" / "a" / "square.png")
    Image.new("L", (20, 30), 90).save(tmp_path / "xr" / "b" / "tall.png")
    data = image_folder.load(tmp_path / "xr", 16, use_cache=False)
    note = " ".join(data.notes)
    assert "of 3 images: 1 colour image(s) converted to grey" in note
    assert "2 resized to 16x16" in note and "2 with an aspect ratio beyond 4:5" in note and "squashed" in note


def test_no_help_text_loses_its_brackets_to_rich_markup() -> None:
    import re

    import typer.main

    command = typer.main.get_command(app)
    for name, sub in command.commands.items():  # type: ignore[attr-defined]
        for parameter in sub.params:
            text = getattr(parameter, "help", None) or ""
            assert not re.search(r"(?<!\\)\[[a-z][a-z0-9_,= -]*\]", text), (name, parameter.name, text)
    result = CliRunner().invoke(app, ["run", "--help"], terminal_width=200)
    assert "medablate[ray]" in result.output


def test_readme_counts_the_bad_inputs_of_the_table() -> None:
    import re

    listed = [line for line in (REPO / "docs" / "bad-inputs.md").read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    readme = (REPO / "README.md").read_text()
    counts = [int(n) for n in re.findall(r"(\d+) (?:bad inputs|cases the)", readme)]
    assert counts and all(n == len(listed) for n in counts), (counts, len(listed))
    messages = [line.split(" | ", 3)[3].rstrip(" |") for line in listed]
    assert not any(len(m) == 600 for m in messages)  # the table cut every message at 600 characters
    changed = next(m for m in messages if "training.epochs: 1 -> 2" in m)
    assert changed.endswith("delete those run folders to retrain them.")  # row 82 ended "Put the study b"
    assert "none of medablate's models has them yet" not in readme


def test_the_printed_conclusions_keep_their_brackets(phantom_study: Path) -> None:
    """Rich read "[primary]" as markup and printed "... spread ; converges"."""
    result = CliRunner().invoke(app, ["compare", str(phantom_study)])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "[primary]" in text and " ;" not in text
