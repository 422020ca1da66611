"""End to end: a tiny phantom study through the real runner, and resume after SIGKILL."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from conftest import assert_clinical_metrics, medablate, write_study
from medablate.config.schema import load_study
from medablate.study.runner import StudyRunner


def run_study(path: Path, out: Path, overrides: tuple[str, ...] = ()) -> int:
    study, _ = load_study(path, list(overrides))
    return StudyRunner(study, out, Console(quiet=True)).run()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def without_seconds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The default tiny study, finished once for the tests that read it or rerun a copy of it."""
    root = tmp_path_factory.mktemp("tiny")
    study = write_study(root)
    assert run_study(study, root / "out") == 0
    return {"study": study, "out": root / "out"}


def copy_of(tiny: dict[str, Path], tmp_path: Path) -> Path:
    subprocess.run(["cp", "-a", str(tiny["out"]), str(tmp_path / "out")], check=True)
    return tmp_path / "out"


def test_tiny_study_writes_every_output(tiny: dict[str, Path]) -> None:
    out = tiny["out"]
    for name in ("study.json", "results.csv", "split.csv", "tables.md", "figures/loss.png"):
        assert (out / name).exists(), name
    rows = read_csv(out / "results.csv")
    assert [r["trial"] for r in rows] == ["base", "CrossEntropyLoss"]
    assert all(r["status"] == "done" and r["test_acc"] and r["data"] == "synthetic phantom" for r in rows)
    assert set(rows[0]) >= {"trial", "comparisons", "training.loss", "seed", "best_epoch", "best_val_loss",
                            "val_acc", "highest_val_acc", "highest_val_acc_epoch", "final_val_acc", "test_acc", "test_loss",
                            "seconds"}
    for row in rows:
        folder = out / "trials" / row["run"]
        for name in ("config.yaml", "history.csv", "best.pt", "last.pt", "metrics.json", "curves.png"):
            assert (folder / name).exists(), (row["run"], name)
    for row in rows:  # per-image predictions agree with the recorded test accuracy
        predictions = read_csv(out / "trials" / row["run"] / "predictions_test.csv")
        assert len(predictions) == 20
        assert sum(int(p["correct"]) for p in predictions) / 20 == pytest.approx(float(row["test_acc"]))
        assert len(read_csv(out / "trials" / row["run"] / "predictions_val.csv")) == 20
    import json

    assert_clinical_metrics(json.loads((out / "trials" / "base-seed0" / "metrics.json").read_text()))
    for name in ("roc.png", "pr.png", "confusion.png", "reliability.png"):
        assert (out / "trials" / "base-seed0" / name).exists(), name
    assert (out / "figures" / "loss-roc.png").exists()
    history = read_csv(out / "trials" / "base-seed0" / "history.csv")
    assert {"val_auc", "val_balanced_acc", "val_sensitivity", "val_specificity"} <= set(history[0])
    split = read_csv(out / "split.csv")
    assert len(split) == 80 and {r["split"] for r in split} == {"train", "val"}
    tables = (out / "tables.md").read_text()
    assert "## Comparison: loss" in tables and "synthetic" in tables


def test_heads_visible_in_config_and_checkpoint(tiny: dict[str, Path]) -> None:
    out = tiny["out"]
    for run, loss, width in (("base-seed0", "BCEWithLogitsLoss", 1), ("CrossEntropyLoss-seed0", "CrossEntropyLoss", 2)):
        config = yaml.safe_load((out / "trials" / run / "config.yaml").read_text())
        assert config["training"]["loss"] == loss and config["resolved"]["num_outputs"] == width
        assert config["training"]["scheduler"]["T_max"] == 3  # the resolved horizon, in epochs
        state = torch.load(out / "trials" / run / "best.pt", weights_only=True)
        assert state["meta"]["num_outputs"] == width


def test_cosine_lr_column_follows_the_closed_form(tmp_path: Path) -> None:
    import math

    out = tmp_path / "out"
    run_study(write_study(tmp_path, comparisons=[]), out, ("training.epochs=4",))  # base-seed0 alone
    lrs = [float(r["lr"]) for r in read_csv(out / "trials" / "base-seed0" / "history.csv")]
    assert lrs == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])


def test_rerun_skips_finished_runs(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = copy_of(tiny, tmp_path)
    before = (out / "trials" / "base-seed0" / "best.pt").stat().st_mtime_ns
    run_study(tiny["study"], out)
    assert (out / "trials" / "base-seed0" / "best.pt").stat().st_mtime_ns == before


def test_other_data_in_the_same_folder_is_refused(tiny: dict[str, Path], tmp_path: Path) -> None:
    from medablate.errors import UserError

    out = copy_of(tiny, tmp_path)
    with pytest.raises(UserError, match="different data"):
        run_study(tiny["study"], out, ("data.phantom.seed=5",))


def test_a_diverged_run_does_not_stop_the_study(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = write_study(tmp_path, training={"epochs": 3, "batch_size": 16, "scheduler": None,
                                           "optimizer": {"name": "SGD", "lr": 1.0}},
                       comparisons=[{"name": "lr", "vary": {"training.optimizer.lr": [1.0, 1e30]}}])
    assert run_study(path, out) == 0
    statuses = {r["trial"]: r["status"] for r in read_csv(out / "results.csv")}
    assert statuses["base"] == "done" and list(statuses.values()).count("diverged") == 1


def _kill_mid_trial(command: list[str], out: Path, run: str, after_epochs: int) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "trials" / run / "history.csv"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if history.exists() and len(history.read_text().splitlines()) - 1 >= after_epochs:
                process.send_signal(signal.SIGKILL)
                break
            if process.poll() is not None:
                pytest.fail("the study finished before it could be killed mid-trial")
            time.sleep(0.01)
        else:
            pytest.fail("the study did not reach the epoch to kill at in time")
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow  # the default suite kills mid-trial in test_faults and test_injection (batch)
def test_sigkill_mid_trial_then_rerun_gives_the_same_results(tmp_path: Path) -> None:
    path = write_study(tmp_path, data={"image_size": 48, "phantom": {"count_per_class": 120},
                                       "split": {"method": "course", "train_per_class": 100}},
                       model={"hidden": [256, 64], "dropout": [0.5, 0.2]}, training={"epochs": 12, "batch_size": 8})
    command = [sys.executable, "-m", "medablate.cli", "run", str(path), "--out"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(command + [str(clean)], check=True, capture_output=True)
    _kill_mid_trial(command + [str(killed)], killed, "CrossEntropyLoss-seed0", after_epochs=4)
    assert not (killed / "trials" / "CrossEntropyLoss-seed0" / "metrics.json").exists()
    assert "interrupted" in medablate("status", str(killed)).stdout
    rerun = medablate("run", str(path), "--out", str(killed))  # the rerun needs no process of its own
    assert rerun.returncode == 0, rerun.stderr
    assert without_seconds(read_csv(killed / "results.csv")) == without_seconds(read_csv(clean / "results.csv"))
    for run in ("base-seed0", "CrossEntropyLoss-seed0"):
        assert (without_seconds(read_csv(killed / "trials" / run / "history.csv"))
                == without_seconds(read_csv(clean / "trials" / run / "history.csv")))
    leftovers = [p for p in killed.rglob("*.tmp")]
    assert not leftovers and not list(killed.rglob("running.json"))


def test_a_three_class_study_reports_macro_and_per_class_metrics(tmp_path: Path) -> None:
    import json

    import numpy as np
    from PIL import Image

    from medablate.data.sources import phantom

    data = phantom.generate(30, 24, 0)
    for i, (pixels, label) in enumerate(zip(data.images, data.labels)):
        name = ["a", "b", "c"][label if i % 3 else 2]
        (tmp_path / "xr" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[0]).save(tmp_path / "xr" / name / f"{i}.png")
    path = write_study(tmp_path, data={"path": str(tmp_path / "xr"), "image_size": 24,
                                       "split": {"method": "stratified", "val_fraction": 0.3}},
                       test=None, training={"epochs": 2, "batch_size": 8, "loss": "CrossEntropyLoss"}, comparisons=[])
    out = tmp_path / "out"
    assert run_study(path, out) == 0
    metrics = json.loads((out / "trials" / "base-seed0" / "metrics.json").read_text())
    section = metrics["evaluation"]["val"]["at_0.5"]
    assert set(section["per_class"]) == {"a", "b", "c"} and "macro_f1" in section
    assert metrics["threshold"] is None and (out / "report.html").exists()
    assert np.array(section["confusion_matrix"]).shape == (3, 3)


def test_run_figures_are_drawn_after_training_and_redrawn_when_stale(tiny: dict[str, Path], tmp_path: Path) -> None:
    """Each run's figures come after the runs (never between them) and record the metrics.json they show: a
    re-evaluated run (another threshold) is redrawn, a current one is left alone."""
    import json

    from medablate.report import run_figures

    out = copy_of(tiny, tmp_path)
    info = json.loads((out / "study.json").read_text())
    assert list(info["timing_seconds"]) == ["setup", "runs", "figures", "analysis", "report"]
    runs = [(out / "trials" / r, r, 32) for r in ("base-seed0", "CrossEntropyLoss-seed0")]
    assert all(run_figures.current(d) for d, _, _ in runs) and (out / "trials" / "base-seed0" / "examples.json").exists()
    assert run_figures.draw_all(runs, "", {}) == 0
    before = (out / "trials" / "base-seed0" / "roc.png").stat().st_mtime_ns
    assert run_study(tiny["study"], out, ("evaluation.threshold=youden",)) == 0
    assert run_figures.current(out / "trials" / "base-seed0")
    assert (out / "trials" / "base-seed0" / "roc.png").stat().st_mtime_ns != before  # its threshold is marked anew



def test_an_image_size_comparison_trains_each_level_on_the_same_images_at_its_size(tmp_path: Path) -> None:
    """vary: {data.image_size: [...]}: each level's runs see the study's images, split and test set loaded again at
    their size (the comparison stays paired); config.yaml records the size; a rerun finds every run finished."""
    import json

    import yaml

    from conftest import medablate, write_study

    study = write_study(tmp_path, seeds=[0], model={"name": "cnn", "widths": [4, 8], "blocks": [1, 1]},
                        data={"split": {"method": "stratified", "val_fraction": 0.25, "test_fraction": 0.25}},
                        test=None, comparisons=[{"name": "px", "vary": {"data.image_size": [32, 24]}}])
    out = tmp_path / "out"
    first = medablate("run", str(study), "--out", str(out))
    assert first.returncode == 0, first.stderr
    runs = {"base-seed0": 32, "24-seed0": 24}
    ids = {}
    for run, size in runs.items():
        config = yaml.safe_load((out / "trials" / run / "config.yaml").read_text())
        assert config["resolved"]["image_shape"] == [size, size] and config["data"]["image_size"] == size
        ids[run] = {split: [r.split(",")[0] for r in (out / "trials" / run / f"predictions_{split}.csv")
                            .read_text().splitlines()[1:]] for split in ("val", "test")}
        assert (out / "trials" / run / "examples.json").exists()
    assert ids["base-seed0"] == ids["24-seed0"] and len(ids["base-seed0"]["test"]) > 0
    fingerprints = {json.loads((out / "trials" / r / "metrics.json").read_text())["data_fingerprint"] for r in runs}
    assert len(fingerprints) == 2  # other pixels, the same images
    before = {p: p.read_bytes() for p in (out / "trials").rglob("*") if p.is_file()}
    again = medablate("run", str(study), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert {p: p.read_bytes() for p in (out / "trials").rglob("*") if p.is_file()} == before
    assert "resized to 32x32 pixels (24x24 in the trials that vary data.image_size" in (out / "methods.md").read_text()
