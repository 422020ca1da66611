"""tracking.mlflow (issue 23): each run is an MLflow run under its trial's parent run, with its params, every epoch
as a step, its final metrics, artifacts and tags; a resumed run continues its MLflow run. Read back with
MlflowClient, as a user's lab would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import write_study
from test_cli import medablate

pytest.importorskip("mlflow")


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"file:{root / 'store'}"
    study = write_study(root, seeds=[0, 1], tracking={"mlflow": {"uri": uri, "experiment": "hw2"}},
                        evaluation={"shifts": [{"name": "noise", "severities": [4]}]})
    assert medablate("run", str(study), "--out", str(root / "out")).returncode == 0
    return root / "out", uri


def children(uri: str) -> dict[str, Any]:
    mlflow = client(uri)
    experiment = mlflow.get_experiment_by_name("hw2")
    runs = mlflow.search_runs([experiment.experiment_id])
    return {r.data.tags.get("medablate.run", f"trial:{r.data.tags['medablate.trial']}"): r for r in runs}


def test_each_run_is_an_mlflow_run_under_its_trials_parent(tracked: tuple[Path, str]) -> None:
    out, uri = tracked
    runs = children(uri)
    assert set(runs) == {"base-seed0", "base-seed1", "CrossEntropyLoss-seed0", "CrossEntropyLoss-seed1",
                         "trial:base", "trial:CrossEntropyLoss"}
    for name in ("base-seed0", "CrossEntropyLoss-seed1"):
        run = runs[name]
        trial = name.rsplit("-seed", 1)[0]
        assert run.data.tags["mlflow.parentRunId"] == runs[f"trial:{trial}"].info.run_id  # grouped by trial
        assert run.data.tags["medablate.seed"] == name[-1] and run.data.tags["medablate.study"] == "tiny"
        assert run.data.tags["level.training.loss"] == ("BCEWithLogitsLoss" if trial == "base" else trial)
        assert run.info.status == "FINISHED" and runs[f"trial:{trial}"].info.status == "FINISHED"
        assert run.data.params["training.loss"] == ("BCEWithLogitsLoss" if trial == "base" else trial)
        assert run.data.params["training.epochs"] == "3" and run.data.params["seed"] == name[-1]
        record = json.loads((out / "trials" / name / "metrics.json").read_text())
        assert run.data.metrics["final_test_accuracy"] == pytest.approx(record["evaluation"]["test"]["at_0.5"]["accuracy"])
        assert run.data.metrics["robust_acc"] == pytest.approx(record["robustness"]["robust_acc"])


def test_every_epoch_is_a_step_and_the_figures_are_artifacts(tracked: tuple[Path, str]) -> None:
    import csv

    out, uri = tracked
    run = children(uri)["base-seed1"]
    history = client(uri).get_metric_history(run.info.run_id, "val_acc")
    with (out / "trials" / "base-seed1" / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([float(r["val_acc"]) for r in rows])
    artifacts = {a.path for a in client(uri).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "curves.png", "roc.png", "confusion.png"} <= artifacts


def test_a_resumed_run_continues_its_mlflow_run(tracked: tuple[Path, str], tmp_path: Path) -> None:
    """The run is trained again from its start (its record and checkpoints lost, as after a kill before the first
    checkpoint): the same MLflow run goes on, and the replayed epochs are not logged twice."""
    import shutil

    out, uri = tracked
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    run_dir = copy / "trials" / "base-seed0"
    before = json.loads((run_dir / "mlflow.json").read_text())
    for name in ("metrics.json", "last.pt", "best.pt", "history.csv"):
        (run_dir / name).unlink()
    assert medablate("run", str(out.parent / "study.yaml"), "--out", str(copy)).returncode == 0
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == before["run_id"]
    runs = children(uri)
    assert len(runs) == 6  # no new MLflow run
    assert [m.step for m in client(uri).get_metric_history(before["run_id"], "val_loss")] == [1, 2, 3]


def test_without_mlflow_installed_the_study_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails
    study = write_study(tmp_path, tracking={"mlflow": {}})
    result = medablate("run", str(study), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "pip install mlflow-skinny" in result.stderr and "Traceback" not in result.stderr
