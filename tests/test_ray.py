"""`medablate run --executor ray` (issue 11): each run a Ray task; a killed worker's run is retried and resumes.

One local Ray instance (2 CPUs, no dashboard) is shared by the tests of this file; the runs' tasks take one CPU
each, so two train at once with one torch thread each, and every number must equal a sequential one-thread run.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from conftest import write_study
from test_cli import assert_user_error, medablate

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'medablate[ray]'")


@pytest.fixture(scope="module")
def local_ray():  # type: ignore[no-untyped-def]
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(handle)]


def run_on_ray(study_file: Path, out: Path) -> int:
    from medablate.config.schema import load_study
    from medablate.study.runner import StudyRunner

    study, _ = load_study(study_file, [])
    runner = StudyRunner(study, out, Console(stderr=True), "test")
    runner.executor = "ray"
    return runner.run()


@pytest.mark.slow  # Ray's retry of a killed task; the default suite runs a Ray study in the next test
def test_ray_runs_equal_a_sequential_run_though_a_worker_is_killed_mid_run(
        tmp_path: Path, local_ray: object, monkeypatch: pytest.MonkeyPatch) -> None:
    study = write_study(tmp_path, seeds=[0, 1], training={"epochs": 4})
    sequential, parallel = tmp_path / "sequential", tmp_path / "ray"
    assert medablate("run", str(study), "--out", str(sequential), "--threads", "1").returncode == 0
    marker = tmp_path / "killed-once"
    # the first task to write its second checkpoint is SIGKILLed (once: its retry runs through)
    monkeypatch.setenv("MEDABLATE_KILL_AT", "after-checkpoint@2")
    monkeypatch.setenv("MEDABLATE_KILL_ONCE", str(marker))
    assert run_on_ray(study, parallel) == 0
    assert marker.exists(), "no worker was killed: the test proves nothing"
    assert rows(parallel / "results.csv") == rows(sequential / "results.csv")
    for run_dir in (sequential / "trials").iterdir():
        assert rows(parallel / "trials" / run_dir.name / "history.csv") == rows(run_dir / "history.csv")
        metrics = json.loads((parallel / "trials" / run_dir.name / "metrics.json").read_text())
        assert metrics["status"] == "done" and metrics["threads"] == 1
    info = json.loads((parallel / "study.json").read_text())
    assert info["executor"] == "ray" and info["status"] == "finished" and (parallel / "report.html").exists()


def test_ray_skips_finished_runs_and_a_task_error_is_one_paragraph(tmp_path: Path, local_ray: object) -> None:
    study = write_study(tmp_path, training={"epochs": 2})
    out = tmp_path / "out"
    assert run_on_ray(study, out) == 0
    before = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in (out / "trials").iterdir()}
    assert run_on_ray(study, out) == 0  # nothing left to train: no task runs, nothing is rewritten
    assert before == {p.name: (p / "metrics.json").stat().st_mtime_ns for p in (out / "trials").iterdir()}

    from medablate.errors import UserError
    from medablate.execute.executors.ray import run_task
    from medablate.config.schema import load_study, to_plain

    plain = to_plain(load_study(study, [])[0])
    remote = ray.remote(run_task)
    with pytest.raises(ray.exceptions.RayTaskError) as caught:  # a folder a node cannot see is named
        ray.get(remote.remote(plain, str(tmp_path / "not-shared"), "base-seed0", 1))
    assert isinstance(caught.value.cause, UserError) and "not visible on Ray node" in str(caught.value.cause)


def test_ray_options_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = write_study(tmp_path)
    assert_user_error(medablate("run", str(study), "--executor", "dask"), "--executor 'dask' is not known")
    assert_user_error(medablate("run", str(study), "--address", "10.0.0.1:6379"), "apply to --executor ray")
    assert_user_error(medablate("run", str(study), "--executor", "ray", "--ray-resources", "cpus=2"),
                      "unknown resource 'cpus'")
    assert_user_error(medablate("run", str(study), "--executor", "ray", "--workers", "2"), "--workers is for the local")
    assert_user_error(medablate("run", str(study), "--workers", "two"), "--workers 'two'")
    from medablate.errors import UserError
    from medablate.execute.executors.ray import parse_resources, require_ray

    assert parse_resources("num_cpus=2, num_gpus=0.5") == {"num_cpus": 2.0, "num_gpus": 0.5}
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UserError, match=r"pip install 'medablate\[ray\]'"):
        require_ray()

