"""Stops and resumes (issues 11, 14): SIGKILL, SIGTERM and SIGINT mid-run, a damaged last checkpoint, two processes
on one folder. Each stopped study is rerun and must give the numbers of an uninterrupted one (split from
test_faults.py so the two files run side by side)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import write_study
from test_cli import medablate
from test_study import _kill_mid_trial, read_csv, without_seconds

SLOW_ENOUGH = {"data": {"image_size": 48, "phantom": {"count_per_class": 120},
                        "split": {"method": "course", "train_per_class": 100}},
               "model": {"hidden": [256, 64], "dropout": [0.5, 0.2]}, "training": {"epochs": 8, "batch_size": 8}}


def assert_same_numbers(out: Path, clean: Path) -> None:
    """results.csv and both runs' history.csv equal the uninterrupted study's, but for the seconds."""
    assert without_seconds(read_csv(out / "results.csv")) == without_seconds(read_csv(clean / "results.csv"))
    for run in ("base-seed0", "CrossEntropyLoss-seed0"):
        assert (without_seconds(read_csv(out / "trials" / run / "history.csv"))
                == without_seconds(read_csv(clean / "trials" / run / "history.csv")))


def command(study: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medablate.cli", "run", str(study), "--out", str(out), *extra]


def test_two_processes_on_one_folder_train_each_run_once(tmp_path: Path) -> None:
    study = write_study(tmp_path, seeds=[0, 1], training={"epochs": 3})
    out = tmp_path / "out"
    first, second = (subprocess.Popen(command(study, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    done = [line.split()[1].rstrip(":") for _, err in outputs for line in err.splitlines() if line.startswith("done ")]
    runs = ["base-seed0", "CrossEntropyLoss-seed0", "base-seed1", "CrossEntropyLoss-seed1"]
    assert sorted(done) == sorted(runs)
    assert all(json.loads((out / "trials" / r / "metrics.json").read_text())["status"] == "done" for r in runs)
    assert not list(out.rglob("claim.lock")) and not list(out.rglob("*.tmp"))


@pytest.mark.slow  # a SIGTERM from outside between epochs; the default suite stops mid-epoch with SIGTERM (below)
def test_sigterm_stops_cleanly_with_143_and_resumes_identically(tmp_path: Path, uninterrupted: Any) -> None:
    study = write_study(tmp_path, **SLOW_ENOUGH)
    stopped = tmp_path / "stopped"
    clean = uninterrupted(study)
    process = subprocess.Popen(command(study, stopped), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = stopped / "trials" / "base-seed0" / "history.csv"
    deadline = time.time() + 120
    while not (history.exists() and len(history.read_text().splitlines()) > 2) and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "Terminated (SIGTERM)" in err and "Traceback" not in err
    assert not list(stopped.rglob("claim.lock")) and not list(stopped.rglob("*.tmp"))
    rerun = medablate("run", str(study), "--out", str(stopped))  # the rerun needs no process of its own
    assert rerun.returncode == 0, rerun.stderr
    assert_same_numbers(stopped, clean)


@pytest.mark.slow  # 43 s; the older slot's fallback is checked by test_checkpoint and test_faults3's damaged runs
def test_a_truncated_last_pt_falls_back_and_finishes_identically(tmp_path: Path, uninterrupted: Any) -> None:
    study = write_study(tmp_path, **SLOW_ENOUGH)
    killed = tmp_path / "killed"
    clean = uninterrupted(study)
    _kill_mid_trial(command(study, killed), killed, "base-seed0", after_epochs=3)
    last = killed / "trials" / "base-seed0" / "last.pt"
    target = last.resolve()
    target.write_bytes(target.read_bytes()[:1000])
    result = medablate("run", str(study), "--out", str(killed))  # the rerun needs no process of its own
    assert result.returncode == 0, result.stderr
    assert "damaged" in result.stderr and "resuming from the previous checkpoint" in " ".join(result.stderr.split())
    assert without_seconds(read_csv(killed / "results.csv")) == without_seconds(read_csv(clean / "results.csv"))


@pytest.mark.slow  # a rare setup; the resume itself is checked by the default kill tests (README: Development)
def test_resuming_a_hard_linked_backup_leaves_the_backup_alone(tmp_path: Path) -> None:
    study = write_study(tmp_path, **SLOW_ENOUGH)
    out, backup = tmp_path / "out", tmp_path / "backup"
    _kill_mid_trial(command(study, out), out, "base-seed0", after_epochs=2)
    subprocess.run(["cp", "-al", str(out), str(backup)], check=True)
    before = {p.name: p.read_bytes() for p in (backup / "trials" / "base-seed0").iterdir() if p.suffix == ".pt"
              and not p.is_symlink()}
    assert before and any(os.stat(backup / "trials" / "base-seed0" / n).st_nlink > 1 for n in before)
    rerun = medablate("run", str(study), "--out", str(out))  # the rerun needs no process of its own
    assert rerun.returncode == 0, rerun.stderr
    after = {n: (backup / "trials" / "base-seed0" / n).read_bytes() for n in before}
    assert after == before


@pytest.mark.parametrize(("every", "kill_after", "checkpoint_epoch"),
                         [pytest.param(3, 5, 3, marks=pytest.mark.slow), ("auto", 3, None)])  # one cadence by default
def test_a_kill_between_two_checkpoints_then_a_rerun_is_identical(tmp_path: Path, uninterrupted: Any, every: object,
                                                                  kill_after: int,
                                                                  checkpoint_epoch: int | None) -> None:
    from medablate.folder.checkpoint import read_checkpoint

    sections = {**SLOW_ENOUGH, "training": {**SLOW_ENOUGH["training"], "checkpoint_every": every}}
    study = write_study(tmp_path, **sections)
    killed = tmp_path / "killed"
    clean = uninterrupted(study)
    _kill_mid_trial(command(study, killed), killed, "base-seed0", after_epochs=kill_after)
    last = killed / "trials" / "base-seed0" / "last.pt"
    if checkpoint_epoch is None:  # auto: under 60 s of training, nothing is written before the end
        assert not last.exists()
    else:
        assert read_checkpoint(last)["epoch"] == checkpoint_epoch
    assert "interrupted" in medablate("status", str(killed)).stdout
    rerun = medablate("run", str(study), "--out", str(killed))  # the rerun needs no process of its own
    assert rerun.returncode == 0, rerun.stderr
    assert_same_numbers(killed, clean)


@pytest.mark.parametrize(("signal_name", "code"), [("TERM", 143), pytest.param("INT", 130, marks=pytest.mark.slow)])
def test_sigterm_or_sigint_mid_epoch_writes_that_step_and_the_rerun_is_identical(tmp_path: Path, uninterrupted: Any,
                                                                                signal_name: str,
                                                                                code: int) -> None:
    """checkpoint_every auto writes nothing in a short run, so without the stop's own checkpoint the rerun would
    start over: it goes on from the very batch (epoch 3, batch 10 of 25) with the same numbers."""
    from medablate.folder.checkpoint import read_checkpoint

    sections = {**SLOW_ENOUGH, "training": {**SLOW_ENOUGH["training"], "checkpoint_every": "auto"}}
    study = write_study(tmp_path, **sections)
    stopped = tmp_path / "stopped"
    clean = uninterrupted(study)
    environment = os.environ | {"MEDABLATE_KILL_AT": "batch@60", "MEDABLATE_KILL_SIGNAL": signal_name}
    result = subprocess.run(command(study, stopped), capture_output=True, text=True, env=environment)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert ("Terminated (SIGTERM)" if signal_name == "TERM" else "Interrupted.") in result.stderr
    state = read_checkpoint(stopped / "trials" / "base-seed0" / "last.pt")
    assert state["epoch"] == 2 and state["cut"]["batch"] == 10 and len(state["history"]) == 2
    assert not list(stopped.rglob("claim.lock")) and not list(stopped.rglob("*.tmp"))
    rerun = medablate("run", str(study), "--out", str(stopped))  # the rerun needs no process of its own
    assert rerun.returncode == 0, rerun.stderr
    assert_same_numbers(stopped, clean)


@pytest.mark.slow  # a study, a kill and a rerun (about 40 s); the unit tests of each choice are in the default suite
def test_issue_21s_training_choices_resume_after_sigkill_identically(
        tmp_path: Path, uninterrupted: Any) -> None:
    """Issue 21's training choices: a SIGKILL after the second epoch's checkpoint, then a rerun, gives the numbers of
    an uninterrupted study (ReduceLROnPlateau's state, early stopping's decision, mixup and cutmix's draws, the weight
    EMA); best.pt
    is the epoch with the highest val_auc, the threshold is the prevalence rule's with its validation interval, and
    the robustness panel is scored alike (both losses: the study compares them)."""
    study = write_study(tmp_path, training={"epochs": 6, "label_smoothing": 0.1, "monitor": "val_auc",
                                            "checkpoint_every": "epoch", "early_stopping": {"patience": 2},
                                            "mixup": 0.2, "cutmix": 1.0, "ema": {"decay": 0.9},
                                            "scheduler": {"name": "ReduceLROnPlateau", "patience": 0}},
                        evaluation={"threshold": {"prevalence": 0.4}, "shifts": ["noise", "rotation"]})
    clean, killed = uninterrupted(study), tmp_path / "killed"
    first = subprocess.run(command(study, killed), capture_output=True, text=True,
                           env={**os.environ, "MEDABLATE_KILL_AT": "after-checkpoint@2"})
    assert first.returncode == -signal.SIGKILL, first.stderr
    rerun = medablate("run", str(study), "--out", str(killed))
    assert rerun.returncode == 0, rerun.stderr
    assert_same_numbers(killed, clean)
    for run in ("base-seed0", "CrossEntropyLoss-seed0"):
        history = read_csv(killed / "trials" / run / "history.csv")
        metrics = json.loads((killed / "trials" / run / "metrics.json").read_text())
        aucs = [float(row["val_auc"]) for row in history]
        assert metrics["monitor"] == "val_auc" and metrics["best_epoch"] == aucs.index(max(aucs)) + 1
        chosen = metrics["evaluation"]["threshold"]
        assert chosen["rule"] == {"prevalence": 0.4} and chosen["ci95"][0] <= chosen["value"] <= chosen["ci95"][1]
        assert (killed / "trials" / run / "robustness.csv").read_text() == \
            (clean / "trials" / run / "robustness.csv").read_text()
        if metrics["stopped_early_epoch"]:  # two epochs without a higher val_auc
            assert metrics["stopped_early_epoch"] == len(history) == metrics["best_epoch"] + 2
