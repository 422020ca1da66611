"""`medablate run --workers N` (issue 11, in part): worker processes share a study through the runs' claims."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import write_study
from test_cli import medablate, medablate_process  # spawned workers: a process of its own


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(handle)]


def test_two_workers_train_each_run_once_with_the_numbers_of_one_thread(tmp_path: Path) -> None:
    study = write_study(tmp_path, seeds=[0, 1], training={"epochs": 2})
    parallel, sequential = tmp_path / "parallel", tmp_path / "sequential"
    result = medablate_process("run", str(study), "--out", str(parallel), "--workers", "2")
    assert result.returncode == 0, result.stderr
    done = sorted(line.split()[1].rstrip(":") for line in result.stderr.splitlines() if line.startswith("done "))
    assert done == sorted(["base-seed0", "base-seed1", "CrossEntropyLoss-seed0", "CrossEntropyLoss-seed1"])
    assert "2 workers x 1 torch thread(s)" in result.stderr
    # each worker has one of the machine's two threads, so the runs equal a sequential study on one thread
    assert medablate("run", str(study), "--out", str(sequential), "--threads", "1").returncode == 0  # in process
    assert rows(parallel / "results.csv") == rows(sequential / "results.csv")
    for run_dir in (sequential / "trials").iterdir():
        assert rows(parallel / "trials" / run_dir.name / "history.csv") == rows(run_dir / "history.csv")
    info = json.loads((parallel / "study.json").read_text())
    assert info["workers"] == 2 and info["status"] == "finished" and (parallel / "report.html").exists()
    assert set(info["timing_seconds"]) == {"setup", "runs", "figures", "analysis", "report"}


def test_workers_auto_is_one_on_a_cpu() -> None:
    from medablate.execute.executors.workers import auto_workers, parse_workers

    assert parse_workers("auto", "cpu") == 1 and auto_workers("cpu") == (1, [])
    from medablate.train.engine import usable_cores

    assert parse_workers("3", "auto") == min(3, usable_cores())  # issue 25: never more workers than cores


@pytest.mark.slow  # a study in spawned workers (15 s)
def test_no_more_workers_start_than_fused_groups_are_left(tmp_path: Path) -> None:
    """One trial's two seeds fused are one group: --workers 2 starts one worker, and study.json says so."""
    study = write_study(tmp_path, seeds=[0, 1], comparisons=[], training={"epochs": 1, "fuse_seeds": "on"})
    result = medablate_process("run", str(study), "--out", str(tmp_path / "out"), "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "1 fused group(s) or run(s) left to train: 1 of the 2 workers asked for" in result.stderr
    assert "1 workers x 2 torch thread(s)" in result.stderr
    assert json.loads((tmp_path / "out" / "study.json").read_text())["workers"] == 1
    assert [r["status"] for r in rows(tmp_path / "out" / "results.csv") if r["seed"] != "ensemble"] == ["done"] * 2
