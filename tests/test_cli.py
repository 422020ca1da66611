"""The command line: exit codes, one-paragraph errors without tracebacks, evaluate and status."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, medablate, medablate_process, write_study  # noqa: F401  (imported from here by others)


def assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    flat = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in flat, flat


def test_help_explains_every_command() -> None:
    result = medablate("--help")
    assert result.returncode == 0
    for command in ("run", "evaluate", "status"):
        assert command in result.stdout
        sub = medablate(command, "--help")
        assert sub.returncode == 0 and "Usage" in sub.stdout


def test_misspelt_scheduler_exits_2_with_suggestion(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    result = medablate("run", str(path), "--set", "training.scheduler=CosineAnealingLR", "--out", str(tmp_path / "o"))
    assert_user_error(result, "training.scheduler", "did you mean 'CosineAnnealingLR'")
    assert not (tmp_path / "o").exists()


def test_bad_data_path_exits_2(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    result = medablate("run", str(path), "--set", f"data.path={tmp_path / 'nowhere'}", "--out", str(tmp_path / "o"))
    assert_user_error(result, "nowhere", "does not exist")


def test_bad_optimizer_argument_fails_before_training(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    result = medablate("run", str(path), "--set", "training.optimizer={name: Adam, lr: fast}", "--out", str(tmp_path / "o"))
    assert_user_error(result, "training.optimizer", "'lr' takes a number, not 'fast'")


def test_dry_run_lists_course_trials() -> None:
    result = medablate("run", str(REPO / "examples" / "course-hw2.yaml"), "--dry-run")
    assert result.returncode == 0
    assert "6 trials" in result.stdout


def save_course_arrays(folder: Path, n: int = 30, size: int = 24) -> None:
    from medablate.data.sources import phantom

    train, test = phantom.generate(n, size, 0), phantom.generate(8, size, 9)
    np.save(folder / "normal.npy", train.images[train.labels == 0, 0])
    np.save(folder / "pneumonia.npy", train.images[train.labels == 1, 0])
    np.save(folder / "test_normal.npy", test.images[test.labels == 0, 0])
    np.save(folder / "test_pneumonia.npy", test.images[test.labels == 1, 0])


def test_npy_pair_study_then_evaluate_and_status(tmp_path: Path) -> None:
    data = tmp_path / "course"
    data.mkdir()
    save_course_arrays(data)
    path = write_study(tmp_path, test={})
    out = tmp_path / "out"
    result = medablate("run", str(path), "--set", f"data.path={data}", "--set", "data.image_size=24",
                       "--set", "data.split.train_per_class=24", "--set", "training.epochs=2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((out / "trials" / "base-seed0" / "config.yaml").read_text())
    assert config["data"]["source"] == "npy-pair" and config["resolved"]["synthetic_data"] is False
    metrics = json.loads((out / "trials" / "base-seed0" / "metrics.json").read_text())
    assert metrics["test"]["count"] == 16

    trial = out / "trials" / "CrossEntropyLoss-seed0"
    evaluation = medablate("evaluate", str(trial), "--data", str(data), "--files", "test_normal.npy,test_pneumonia.npy")
    assert evaluation.returncode == 0, evaluation.stderr
    assert "accuracy" in evaluation.stdout and "confusion" in evaluation.stdout
    written = json.loads((trial / "evaluations" / "course.json").read_text())
    saved = json.loads((trial / "metrics.json").read_text())["test"]
    assert written["accuracy"] == saved["accuracy"] and written["confusion_matrix"] == saved["confusion_matrix"]

    wrong_rule = medablate("evaluate", str(trial), "--data", str(data), "--files", "test_normal.npy,test_pneumonia.npy",
                           "--loss", "BCEWithLogitsLoss")
    assert_user_error(wrong_rule, "2-logit head", "BCEWithLogitsLoss")

    status = medablate("status", str(out))
    assert status.returncode == 0 and status.stdout.count("done") >= 2


def test_evaluate_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "trial").mkdir()
    assert_user_error(medablate("evaluate", str(tmp_path / "trial")), "best.pt does not exist")


def test_status_of_a_non_study_folder(tmp_path: Path) -> None:
    assert_user_error(medablate("status", str(tmp_path)), "not a study folder")


@pytest.mark.parametrize("bad", ["{name: x, comparisons: [{name: c, vary: {training.loss: []}}]}", "[1, 2]"])
def test_unusable_study_files_exit_2(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(bad)
    assert medablate("run", str(path), "--out", str(tmp_path / "o")).returncode == 2
