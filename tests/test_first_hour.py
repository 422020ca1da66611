"""Defects a new user hit in the first hour (issue 9): each test reproduces one and checks its fix.

The numbers in the test names are the issue's item numbers.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import write_study
from test_cli import assert_user_error, medablate, save_course_arrays


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medablate.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished npy-pair study (classes 'normal', 'pneumonia') with a test set, and its data folder."""
    root = tmp_path_factory.mktemp("course")
    data = root / "course"
    data.mkdir()
    save_course_arrays(data)
    out = root / "out"
    result = medablate("run", str(write_study(root, test={})), "--set", f"data.path={data}", "--set",
                       "data.image_size=24", "--set", "data.split.train_per_class=24", "--set", "training.epochs=6",
                       "--set", "training.optimizer={name: Adam, lr: 0.01}", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return {"root": root, "data": data, "out": out, "trial": out / "trials" / "base-seed0"}


def save_pngs(arrays: dict[str, np.ndarray], folder: Path, bits: int = 8) -> None:
    for name, images in arrays.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            pixels = image.astype(np.uint16) * 257 if bits == 16 else image
            Image.fromarray(pixels).save(folder / name / f"{name}-{i:03d}.png")


def test_1_evaluate_matches_class_folders_by_name_not_position(course: dict[str, Path], tmp_path: Path) -> None:
    saved = json.loads((course["trial"] / "metrics.json").read_text())["test"]
    assert saved["confusion_matrix"] != saved["confusion_matrix"][::-1], "swapped labels must change the numbers"
    folder = tmp_path / "mixed-case"
    # 'PNEUMONIA' sorts before 'normal': matching by sorted position swaps the labels.
    save_pngs({"PNEUMONIA": np.load(course["data"] / "test_pneumonia.npy"),
               "normal": np.load(course["data"] / "test_normal.npy")}, folder)
    result = medablate("evaluate", str(course["trial"]), "--data", str(folder))
    assert result.returncode == 0, result.stderr
    written = json.loads((course["trial"] / "evaluations" / "mixed-case.json").read_text())
    assert written["accuracy"] == saved["accuracy"] and written["confusion_matrix"] == saved["confusion_matrix"]

    other = tmp_path / "animals"
    save_pngs({"cats": np.load(course["data"] / "test_normal.npy"),
               "dogs": np.load(course["data"] / "test_pneumonia.npy")}, other)
    assert_user_error(medablate("evaluate", str(course["trial"]), "--data", str(other)),
                      "['cats', 'dogs']", "['normal', 'pneumonia']")


def test_2_evaluate_without_data_uses_the_studys_test_set(course: dict[str, Path], tmp_path: Path) -> None:
    saved = json.loads((course["trial"] / "metrics.json").read_text())["test"]
    result = medablate("evaluate", str(course["trial"]))
    assert result.returncode == 0, result.stderr
    assert "phantom" not in result.stdout
    written = json.loads((course["trial"] / "evaluations" / "study-test.json").read_text())
    assert written["data"] == "the study's test set" and written["count"] == saved["count"]
    assert written["accuracy"] == saved["accuracy"]

    out = tmp_path / "no-test"
    assert medablate("run", str(write_study(tmp_path, test=None, training={"epochs": 1})), "--set",
                     "comparisons=[]", "--out", str(out)).returncode == 0
    assert_user_error(medablate("evaluate", str(out / "trials" / "base-seed0")), "has no test set", "--data")


def test_3_evaluate_on_training_images_says_it_is_not_a_test(course: dict[str, Path]) -> None:
    result = medablate("evaluate", str(course["trial"]), "--data", str(course["data"]), "--name", "train")
    assert result.returncode == 0, result.stderr
    written = json.loads((course["trial"] / "evaluations" / "train.json").read_text())
    assert written["overlap"] == {"shared_images": 60, "of": 60, "matched_by": "pixels"}
    assert "not a test result" in " ".join(result.stderr.split())
    clean = medablate("evaluate", str(course["trial"]), "--data", str(course["data"]), "--name", "test",
                      "--files", "test_normal.npy,test_pneumonia.npy")
    assert clean.returncode == 0 and "not a test result" not in clean.stderr
    assert json.loads((course["trial"] / "evaluations" / "test.json").read_text())["overlap"]["shared_images"] == 0


def test_4_evaluate_gives_clinical_metrics_and_reads_a_manifest(course: dict[str, Path], tmp_path: Path) -> None:
    saved = json.loads((course["trial"] / "metrics.json").read_text())
    save_pngs({"normal": np.load(course["data"] / "test_normal.npy"),
               "pneumonia": np.load(course["data"] / "test_pneumonia.npy")}, tmp_path / "images")
    manifest = tmp_path / "manifest.csv"
    rows = [f"images/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted((tmp_path / "images").rglob("*.png"))]
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    result = medablate("evaluate", str(course["trial"]), "--data", str(manifest), "--source", "manifest")
    assert result.returncode == 0, result.stderr
    assert "roc_auc" in result.stdout and "validated threshold" in result.stdout
    written = json.loads((course["trial"] / "evaluations" / "manifest.csv.json").read_text())
    assert written["source"] == "manifest" and written["accuracy"] == saved["test"]["accuracy"]
    for at in ("at_0.5", "at_threshold"):
        section, expected = written["metrics"][at], saved["evaluation"]["test"][at]
        assert section["roc_auc"] == pytest.approx(expected["roc_auc"])
        assert section["sensitivity"] == pytest.approx(expected["sensitivity"])
        assert section["ci95"]["roc_auc"][0] <= section["roc_auc"] <= section["ci95"]["roc_auc"][1]


def test_5_sixteen_bit_png_decodes_like_its_eight_bit_original(course: dict[str, Path], tmp_path: Path) -> None:
    from medablate.data.sources.image_folder import decode

    original = np.load(course["data"] / "test_normal.npy")[:2]
    save_pngs({"eight": original}, tmp_path)
    save_pngs({"sixteen": original}, tmp_path, bits=16)
    assert Image.open(tmp_path / "sixteen" / "sixteen-000.png").mode.startswith("I")
    assert np.array_equal(decode(tmp_path / "sixteen" / "sixteen-000.png", 24), original[0])
    eight = medablate("predict", str(course["trial"]), str(tmp_path / "eight"), "--json")
    sixteen = medablate("predict", str(course["trial"]), str(tmp_path / "sixteen"), "--json")
    assert eight.returncode == 0 and sixteen.returncode == 0, sixteen.stderr
    probs = [[p["probabilities"] for p in json.loads(r.stdout)["predictions"]] for r in (eight, sixteen)]
    assert probs[0] == probs[1]
    info = json.loads((course["out"] / "study.json").read_text())
    assert "16-bit" in info["data"]["intensity"]


def test_6_validation_accuracy_is_the_checkpoints(course: dict[str, Path]) -> None:
    metrics = json.loads((course["trial"] / "metrics.json").read_text())
    history = read_csv(course["trial"] / "history.csv")
    assert metrics["monitor"] == "val_loss"
    assert metrics["val_acc"] == pytest.approx(float(history[metrics["best_epoch"] - 1]["val_acc"]))
    assert metrics["highest_val_acc"] == pytest.approx(max(float(r["val_acc"]) for r in history))
    row = next(r for r in read_csv(course["out"] / "results.csv") if r["run"] == "base-seed0")
    assert float(row["val_acc"]) == pytest.approx(metrics["val_acc"]) and "best_val_acc" not in row
    status = medablate("status", str(course["out"]))
    assert f"{metrics['val_acc']:.3f}" in status.stdout and "best.pt" in status.stdout


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny study at 2 epochs, finished once: tests 7 and 8 change copies of it."""
    root = tmp_path_factory.mktemp("two-epochs")
    study = write_study(root, training={"epochs": 2})
    assert medablate("run", str(study), "--out", str(root / "out")).returncode == 0
    return {"study": study, "out": root / "out"}


def copy_of(finished: dict[str, Path], tmp_path: Path) -> Path:
    subprocess.run(["cp", "-a", str(finished["out"]), str(tmp_path / "out")], check=True)
    return tmp_path / "out"


def test_7_a_changed_threshold_is_applied_to_finished_runs(two_epochs: dict[str, Path], tmp_path: Path) -> None:
    study, out, fresh = two_epochs["study"], copy_of(two_epochs, tmp_path), tmp_path / "fresh"
    changed = ("--set", "evaluation.threshold=youden", "--set", "evaluation.shifts=[noise]")  # the panel: from best.pt
    again = medablate("run", str(study), "--out", str(out), *changed)
    assert again.returncode == 0, again.stderr
    assert "re-evaluated" in again.stderr and "base-seed0: scoring the robustness panel from best.pt" in again.stderr
    assert medablate("run", str(study), "--out", str(fresh), *changed).returncode == 0
    for run in ("base-seed0", "CrossEntropyLoss-seed0"):
        updated = json.loads((out / "trials" / run / "metrics.json").read_text())
        direct = json.loads((fresh / "trials" / run / "metrics.json").read_text())
        assert updated["evaluation"]["threshold"]["rule"] == "youden"
        assert updated["threshold"] == direct["threshold"]
        assert updated["evaluation"]["test"]["at_threshold"]["accuracy"] == \
            direct["evaluation"]["test"]["at_threshold"]["accuracy"]
        assert (out / "trials" / run / "predictions_test.csv").read_text() == \
            (fresh / "trials" / run / "predictions_test.csv").read_text()
        assert updated["robustness"] == direct["robustness"] and updated["robustness"]["shifted_sets"] == 5
        assert (out / "trials" / run / "robustness.csv").read_text() == \
            (fresh / "trials" / run / "robustness.csv").read_text()


def test_8_a_changed_setting_names_the_keys_and_how_to_extend(two_epochs: dict[str, Path], tmp_path: Path) -> None:
    study, out = two_epochs["study"], copy_of(two_epochs, tmp_path)
    before = (out / "trials" / "base-seed0" / "metrics.json").read_text()
    result = medablate("run", str(study), "--out", str(out), "--set", "training.epochs=3")
    assert_user_error(result, "training.epochs: 2 -> 3", "training.scheduler.T_max: 2 -> 3", "different trial",
                      "vary: {training.epochs: [old, new]}")
    assert (out / "trials" / "base-seed0" / "metrics.json").read_text() == before
    # a half-finished study (seed 0 done, seed 1 new) is refused the same way: nothing is mixed
    result = medablate("run", str(study), "--out", str(out), "--set", "training.epochs=3", "--set", "seeds=[0, 1]")
    assert_user_error(result, "training.epochs: 2 -> 3")
    assert not (out / "trials" / "base-seed1").exists()
    # runtime settings are not part of a run's identity
    assert medablate("run", str(study), "--out", str(out), "--set", "training.eval_batch_size=7").returncode == 0


def test_9_exponent_numbers_in_yaml_are_numbers(tmp_path: Path) -> None:
    from medablate.config.schema import load_study

    path = tmp_path / "s.yaml"
    path.write_text("name: s\ntraining:\n  optimizer: {name: Adam, lr: 1e-4, weight_decay: 5E-5}\n")
    study, _ = load_study(path)
    assert study.training.optimizer.kwargs == {"lr": 1e-4, "weight_decay": 5e-5}
    study, _ = load_study(path, ["training.optimizer.lr=3e-4"])
    assert study.training.optimizer.kwargs["lr"] == 3e-4


def test_10_set_into_a_defaulted_section_merges_with_the_default(tmp_path: Path) -> None:
    from medablate.config.schema import load_study

    path = tmp_path / "s.yaml"
    path.write_text("name: s\n")
    study, _ = load_study(path, ["training.optimizer.lr=1e-4"])
    assert study.training.optimizer.name == "Adam" and study.training.optimizer.kwargs == {"lr": 1e-4}
    study, _ = load_study(path, ["training.scheduler.eta_min=1e-5"])
    assert study.training.scheduler is not None and study.training.scheduler.name == "CosineAnnealingLR"


def test_11_no_spread_is_never_p_zero() -> None:
    from medablate.analysis import stats
    from medablate.analysis.compare import _ci, seed_row
    from medablate.config.schema import Study
    from medablate.analysis.outcomes import BY_KEY

    assert stats.paired_p_value([2.0] * 5) == pytest.approx(2 / 2**5)
    assert stats.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    row = seed_row(Study(name="x"), BY_KEY["convergence_epoch"], np.array([5.0, 6, 7, 8, 9]), np.array([3.0, 4, 5, 6, 7]))
    assert row["p"] == pytest.approx(0.0625) and "sign-flip" in row["test"]
    assert _ci(BY_KEY["convergence_epoch"], row) == "no spread: every seed pair differs by exactly +2.0 epochs"


def test_12_training_time_is_never_in_a_test_family() -> None:
    from medablate.analysis.compare import seed_row, verdict
    from medablate.config.schema import Study
    from medablate.analysis.outcomes import BY_KEY

    row = seed_row(Study(name="x"), BY_KEY["seconds"], np.array([10.0, 11, 12]), np.array([20.0, 22, 21]))
    assert np.isnan(row["p"]) and verdict(row | {"p_holm": float("nan")}, 0.05) == "descriptive"
    assert "machine load" in row["detail"]


def test_13_accuracy_bands_stay_inside_zero_and_one() -> None:
    from medablate.report import plots

    mean, half = np.array([0.95, 0.99, 0.02]), np.array([0.1, 0.1, 0.1])
    low, high = plots.band_limits(mean, half, "acc")
    assert high.max() <= 1 and low.min() >= 0
    low, high = plots.band_limits(np.array([2.0]), np.array([3.0]), "loss")
    assert low[0] == 0 and high[0] == 5


@pytest.mark.slow  # two processes of their own; torch's threads are set by configure_threads, tested in-process
def test_14_threads_follow_omp_num_threads_and_the_flag(tmp_path: Path) -> None:
    study = write_study(tmp_path, training={"epochs": 1})
    for args, env, expected in (([], {"OMP_NUM_THREADS": "1"}, (1, "OMP_NUM_THREADS")),
                                (["--threads", "1"], {}, (1, "--threads"))):
        out = tmp_path / expected[1].strip("-")
        env = env or {"OMP_NUM_THREADS": ""}
        result = run_cli("run", str(study), "--out", str(out), "--set", "comparisons=[]", *args, env=env)
        assert result.returncode == 0, result.stderr
        machine = json.loads((out / "study.json").read_text())["machine"]
        assert (machine["torch_threads"], machine["threads_from"]) == expected
        assert json.loads((out / "trials" / "base-seed0" / "metrics.json").read_text())["threads"] == 1


def test_15_test_fraction_holds_out_a_patient_grouped_test_set(tmp_path: Path) -> None:
    from medablate.config.schema import SplitConfig
    from medablate.data.split import TEST, make_split, patients
    from medablate.data.types import ImageSet

    names = [f"person{i // 3}_virus_{i % 3}.png" for i in range(300)]
    labels = np.array([(i // 3) % 2 for i in range(300)])
    data = ImageSet(np.zeros((300, 4, 4), np.uint8), labels, names, ["a", "b"], "test")
    config = SplitConfig(method="stratified", val_fraction=0.2, test_fraction=0.2,
                         group_by={"regex": r"(person\d+)_"})
    split = make_split(data, config)
    owners = patients(data, r"(person\d+)_")
    sides = {}
    for owner, side in zip(owners, split):
        sides.setdefault(owner, set()).add(side)
    assert all(len(s) == 1 for s in sides.values())
    assert 0.12 < np.mean(split == TEST) < 0.28 and 0.12 < np.mean(split == "val") < 0.28
    from medablate.config.schema import Study
    from medablate.execute.prepare import load_study_data
    from rich.console import Console

    folder = tmp_path / "people"
    for i, (name, label) in enumerate(zip(names, labels)):
        (folder / "ab"[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), i % 250, np.uint8)).save(folder / "ab"[label] / name)
    grouped = Study(name="g", data={"path": folder, "image_size": 8, "duplicates": "keep",
                                     "split": config.model_dump()})
    loaded = load_study_data(grouped, Console(quiet=True))
    assert loaded.test is not None and loaded.test_patients == len({n.split("_")[0] for n in loaded.test.ids})

    out = tmp_path / "out"
    result = medablate("run", str(write_study(tmp_path, test=None, training={"epochs": 1})), "--set", "comparisons=[]",
                       "--set", "data.split={method: stratified, test_fraction: 0.25}", "--out", str(out))
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "study.json").read_text())
    assert info["data"]["counts"]["test"] == {"normal": 10, "pneumonia": 10}
    assert info["data"]["test_from"].startswith("held out")
    assert json.loads((out / "trials" / "base-seed0" / "metrics.json").read_text())["test"]["count"] == 20

    bare = tmp_path / "bare"
    assert medablate("run", str(write_study(tmp_path, test=None, training={"epochs": 1})), "--set", "comparisons=[]",
                     "--out", str(bare)).returncode == 0
    assert any("no test set" in n for n in json.loads((bare / "study.json").read_text())["notes"])
    both = medablate("run", str(write_study(tmp_path, training={"epochs": 1})), "--set",
                     "data.split={method: stratified, test_fraction: 0.25}", "--out", str(tmp_path / "both"))
    assert_user_error(both, "test_fraction", "test=null")


def test_readme_real_data_command_holds_out_a_grouped_test_set() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = readme.split("## Your own data", 1)[1].split("Data sources", 1)[0]
    assert "test_fraction" in command and "group_by" in command and "test=null" in command
    assert yaml.safe_load is not None
