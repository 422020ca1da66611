"""Faults, part 2 (issue 14): stale and live claims, false 'disk full', damaged files, data that slipped past
validation, and the smaller defects. Each test failed on the code before. The stops and resumes of that issue
(SIGTERM, SIGINT, kills between checkpoints, hard-linked backups) are in test_resume.py."""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_study
from test_cli import assert_user_error, medablate, medablate_process
from test_resume import assert_same_numbers


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished tiny study (2 trials, 2 epochs) to damage copies of."""
    root = tmp_path_factory.mktemp("finished")
    study = write_study(root, training={"epochs": 2})
    out = root / "out"
    assert medablate("run", str(study), "--out", str(out)).returncode == 0
    return {"root": root, "study": study, "out": out}


def copy_of(finished: dict[str, Path], tmp_path: Path) -> Path:
    subprocess.run(["cp", "-a", str(finished["out"]), str(tmp_path / "out")], check=True)
    return tmp_path / "out"


# ------------------------------------------------------------------ claims and signals


def test_a_stale_marker_or_claim_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    study = write_study(tmp_path, training={"epochs": 1}, comparisons=[])
    out = tmp_path / "out"
    run_dir = out / "trials" / "base-seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "running.json").write_text(json.dumps({"pid": 1, "host": "a-container-that-is-gone"}))
    (run_dir / "claim.lock").write_text(json.dumps({"pid": 1, "host": "a-container-that-is-gone"}))
    result = medablate("run", str(study), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "done"
    assert not (run_dir / "running.json").exists() and not (run_dir / "claim.lock").exists()


def test_a_run_claimed_by_a_live_process_is_skipped_not_an_error(tmp_path: Path) -> None:
    from medablate.folder import claims

    study = write_study(tmp_path, training={"epochs": 1})
    out = tmp_path / "out"
    claim = claims.try_claim(out / "trials" / "base-seed0")
    assert claim is not None and claims.try_claim(out / "trials" / "base-seed0") is None
    try:
        result = medablate_process("run", str(study), "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert "being trained by another medablate process" in " ".join(result.stderr.split())
        assert not (out / "trials" / "base-seed0" / "metrics.json").exists()
        assert (out / "trials" / "CrossEntropyLoss-seed0" / "metrics.json").exists()
        status = medablate("status", str(out))  # the claim is this process's: status needs no process of its own
        assert "running" in status.stdout
    finally:
        claims.release(claim)
    assert medablate("run", str(study), "--out", str(out)).returncode == 0
    assert (out / "trials" / "base-seed0" / "metrics.json").exists()


def test_only_enospc_or_edquot_is_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from medablate.execute.run import disk_full

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=55 * 2**20))
    assert not disk_full(TypeError("unsupported operand"), tmp_path)
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from inner
    except RuntimeError as outer:
        assert disk_full(outer, tmp_path)
    assert disk_full(RuntimeError("file write failed"), tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=50 * 2**30))
    assert not disk_full(RuntimeError("file write failed"), tmp_path)


# ------------------------------------------------------------------ damaged files


def test_damaged_checkpoints_and_configs_in_evaluate_and_predict(finished: dict[str, Path], tmp_path: Path) -> None:
    out = copy_of(finished, tmp_path)
    run_dir = out / "trials" / "base-seed0"
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    best = run_dir / "best.pt"
    best.resolve().write_bytes(best.resolve().read_bytes()[:500])
    assert_user_error(medablate("evaluate", str(run_dir)), "best.pt is damaged")
    assert_user_error(medablate("predict", str(run_dir), str(image)), "best.pt is damaged")
    other = out / "trials" / "CrossEntropyLoss-seed0"
    (other / "last.pt").resolve().write_bytes(os.urandom(4000))
    assert_user_error(medablate("evaluate", str(other), "--checkpoint", "last"), "last.pt is damaged")
    (other / "config.yaml").unlink()
    assert_user_error(medablate("predict", str(other), str(image)), "config.yaml is missing")
    assert_user_error(medablate("evaluate", str(out)), "is a study folder, not a run folder")


@pytest.mark.parametrize("damage", ["cut mid-row", pytest.param("non-numeric cell", marks=pytest.mark.slow)])
def test_a_damaged_history_is_rebuilt_from_last_pt(finished: dict[str, Path], tmp_path: Path, damage: str) -> None:
    out = copy_of(finished, tmp_path)
    history = out / "trials" / "base-seed0" / "history.csv"
    original = history.read_text()
    if damage == "cut mid-row":
        history.write_text(original[: len(original) - 25])
    else:
        history.write_text(original.replace(original.splitlines()[1].split(",")[3], "oops", 1))
    for args in (["status", str(out)], ["compare", str(out)], ["report", str(out)]):
        result = medablate(*args)
        assert result.returncode == 0, (args, result.stderr)
    assert [r["val_acc"] for r in csv.DictReader(history.open())] == \
        [r["val_acc"] for r in csv.DictReader(original.splitlines())]
    assert medablate("run", str(finished["study"]), "--out", str(out)).returncode == 0


@pytest.mark.parametrize("content", ["{not json", json.dumps({"name": "tiny", "study": {"name": "tiny", "seeds": "x"}})])
def test_a_damaged_study_json_is_named(finished: dict[str, Path], tmp_path: Path, content: str) -> None:
    out = copy_of(finished, tmp_path)
    (out / "study.json").write_text(content)
    for args in (["status", str(out)], ["compare", str(out)], ["report", str(out)]):
        assert_user_error(medablate(*args), "study.json", "run the study again")
    result = medablate("run", str(finished["study"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert medablate("status", str(out)).returncode == 0


# ------------------------------------------------------------------ data that slipped past validation


def write_npz(path: Path, labels: np.ndarray | None = None, shorter: bool = False) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        split_labels = (np.arange(n) % 2).reshape(-1, 1) if labels is None else labels[:n].reshape(-1, 1)
        arrays[f"{split}_labels"] = split_labels[:-3] if shorter else split_labels
    np.savez(path, **arrays)


def write_manifest(folder: Path, rows: list[tuple[str, str, str]]) -> Path:
    for i in range(12):
        Image.fromarray(np.full((16, 16), i * 20, np.uint8)).save(folder / f"{i}.png")
    path = folder / "manifest.csv"
    path.write_text("path,label,split\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return path


def manifest_rows(**changes: tuple[str, str, str]) -> list[tuple[str, str, str]]:
    rows = [(f"{i}.png", "a" if i % 2 else "b", "") for i in range(12)]
    for index, row in changes.items():
        rows[int(index.strip("_"))] = row
    return rows


BAD_DATA = {
    "manifest row with no label": lambda d: write_manifest(d, manifest_rows(_3=("3.png", "", ""))),
    "manifest split partly empty": lambda d: write_manifest(d, manifest_rows(_0=("0.png", "b", "train"))),
    "medmnist labels shorter than images": lambda d: write_npz(d / "x.npz", shorter=True) or d / "x.npz",
    "medmnist labels of -1": lambda d: write_npz(d / "x.npz", np.array([-1, 0, 1] * 20)) or d / "x.npz",
    "medmnist float labels": lambda d: write_npz(d / "x.npz", np.array([0.5, 1.0] * 30)) or d / "x.npz",
    "npy of shape (N, 0, 0)": lambda d: (np.save(d / "normal.npy", np.zeros((5, 0, 0), np.uint8)),
                                         np.save(d / "pneumonia.npy", np.zeros((5, 0, 0), np.uint8)), d)[-1],
    "npy of strings": lambda d: (np.save(d / "normal.npy", np.array([["a"] * 4] * 4)[None].repeat(3, 0)),
                                 np.save(d / "pneumonia.npy", np.zeros((3, 4, 4), np.uint8)), d)[-1],
    "npy all NaN": lambda d: (np.save(d / "normal.npy", np.full((3, 4, 4), np.nan)),
                              np.save(d / "pneumonia.npy", np.zeros((3, 4, 4), np.uint8)), d)[-1],
    "npy complex": lambda d: (np.save(d / "normal.npy", np.zeros((3, 4, 4), complex)),
                              np.save(d / "pneumonia.npy", np.zeros((3, 4, 4), np.uint8)), d)[-1],
}
EXPECTED = {"manifest row with no label": "label is empty", "manifest split partly empty": "split column is filled",
            "medmnist labels shorter than images": "labels for", "medmnist labels of -1": "negative labels",
            "medmnist float labels": "non-integer labels", "npy of shape (N, 0, 0)": "no pixels",
            "npy of strings": "not pixel data", "npy all NaN": "NaN", "npy complex": "not pixel data"}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_data_that_slipped_past_validation_is_a_clear_error(tmp_path: Path, case: str) -> None:
    (tmp_path / "data").mkdir()
    data = BAD_DATA[case](tmp_path / "data")
    study = write_study(tmp_path, test=None, comparisons=[], training={"epochs": 1},
                        data={"path": str(data), "image_size": 16, "split": {"method": "stratified"}})
    assert_user_error(medablate("run", str(study), "--out", str(tmp_path / "out")), EXPECTED[case])


@pytest.mark.parametrize(("setting", "message"), [
    ("training.scheduler={name: CosineAnnealingLR, T_max: abc}", "'T_max' takes a number, not 'abc'"),
    ("training.optimizer={name: Adam, lr: 0.001, amsgrad: x}", "'amsgrad' takes true or false, not 'x'")])
def test_wrongly_typed_optimizer_and_scheduler_arguments_fail_before_training(tmp_path: Path, setting: str,
                                                                              message: str) -> None:
    study = write_study(tmp_path)
    assert_user_error(medablate("run", str(study), "--set", setting, "--dry-run"), "training.", message)


def test_arguments_torch_only_rejects_when_stepping_fail_before_training() -> None:
    from medablate.config.schema import SchedulerConfig, TrainingConfig, TrialConfig
    from medablate.errors import UserError
    from medablate.execute.plan import Plan, Trial
    from medablate.execute.prepare import check_buildable

    # past validation (built unvalidated here): torch builds this scheduler and fails only at its first step
    scheduler = SchedulerConfig.model_construct(name="CosineAnnealingLR", interval="epoch", T_max="abc")
    training = TrainingConfig(epochs=2).model_copy(update={"scheduler": scheduler})
    with pytest.raises(UserError, match="cannot be built"):
        check_buildable(Plan([Trial("t", TrialConfig(training=training))], [0], []))


# ------------------------------------------------------------------ smaller


def test_predict_saliency_keeps_inputs_with_the_same_name_apart(finished: dict[str, Path], tmp_path: Path) -> None:
    for folder, value in (("a", 0), ("b", 200)):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((32, 32), value, np.uint8)).save(tmp_path / folder / "scan.png")
    result = medablate("predict", str(finished["out"] / "trials" / "base-seed0"), str(tmp_path / "a"),
                       str(tmp_path / "b"), "--saliency", str(tmp_path / "sal"), "--json")
    assert result.returncode == 0, result.stderr
    written = [p["saliency"] for p in json.loads(result.stdout)["predictions"]]
    assert len(set(written)) == 2 and all(Path(w).exists() for w in written)


def test_comparison_names_cannot_write_outside_figures(tmp_path: Path) -> None:
    from medablate.core.names import safe_name

    assert safe_name("..") not in (".", "..") and safe_name(".") != "." and not safe_name(".hidden").startswith(".")
    study = write_study(tmp_path, training={"epochs": 1},
                        comparisons=[{"name": "..", "vary": {"training.loss": ["BCEWithLogitsLoss", "CrossEntropyLoss"]}}])
    out = tmp_path / "out"
    assert medablate("run", str(study), "--out", str(out)).returncode == 0
    assert not list(tmp_path.glob("*.png")) and not list(out.glob("*.png"))
    assert list((out / "figures").glob("_*.png"))


def test_a_folder_given_as_the_study_file_says_so(tmp_path: Path) -> None:
    assert_user_error(medablate("run", str(tmp_path)), "is a folder, not a study file")


# ------------------------------------------------------------------ storage


def test_a_full_disk_stops_cleanly_and_the_same_command_then_finishes_identically(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from medablate.cli import app
    from medablate.core import atomic

    study = write_study(tmp_path, training={"epochs": 3})
    clean, full = tmp_path / "clean", tmp_path / "full"
    assert CliRunner().invoke(app, ["run", str(study), "--out", str(clean)]).exit_code == 0
    real, writes = atomic._replace_with, []

    def filling_up(path: Path, *args: object, **kwargs: object) -> None:
        writes.append(path.name)
        if path.name == "history.csv" and writes.count("history.csv") == 5:  # the 2nd run's 2nd epoch
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, *args, **kwargs)

    monkeypatch.setattr(atomic, "_replace_with", filling_up)
    result = CliRunner().invoke(app, ["run", str(study), "--out", str(full)])
    assert result.exit_code == 2 and "the disk is full" in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not list(full.rglob("claim.lock")) and not list(full.rglob("*.tmp"))
    monkeypatch.setattr(atomic, "_replace_with", real)
    assert CliRunner().invoke(app, ["run", str(study), "--out", str(full)]).exit_code == 0
    assert_same_numbers(full, clean)


def test_failed_runs_give_no_stray_matplotlib_warning(tmp_path: Path) -> None:
    study = write_study(tmp_path, training={"epochs": 1, "batch_size": 1})  # BatchNorm fails on 1-image batches
    result = medablate_process("run", str(study), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and "failed: ValueError" in " ".join(result.stderr.split())
    assert "Warning" not in result.stderr and (tmp_path / "out" / "report.html").exists()


# ------------------------------------------------------------------ checkpoint cadence (issue 11, in part)


