"""Fault injection (issue 12): kill a small study with SIGKILL at every named point, rerun the same command, and
check it finished exactly as an uninterrupted run: the same numbers, every file, no temp file or claim left,
and `medablate status` right before and after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, medablate, write_study
from medablate.core import faults
from medablate.report.run_figures import PROCESSES_VARIABLE

sys.path.insert(0, str(REPO / "benchmarks"))

KILL_POINTS = [*faults.POINTS, "write:study.json", "write:results.csv", "write:history.csv", "write:metrics.json",
               "write:config.yaml", "write:loss.png", "write:curves.png", "write:report.html",
               "after-checkpoint@3", "before-metrics@2"]
# four points in the default suite (mid-training, a run's end, a figure helper process, the report at the study's
# end); every point with -m slow (see README's Development), kill_campaign.py at random
DEFAULT_POINTS = {"batch", "before-metrics", "write:curves.png", "report"}


def run(study: Path, out: Path, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != faults.VARIABLE}
    env[PROCESSES_VARIABLE] = "2"  # the runs' figures in helper processes, as on a machine with many runs: the
    if kill_at:                     # kill points there stand for the whole machine dying
        env[faults.VARIABLE] = kill_at
    return subprocess.run([sys.executable, "-m", "medablate.cli", "run", str(study), "--out", str(out)],
                          capture_output=True, text=True, env=env)


from kill_campaign import csv_without_seconds, without_timing  # noqa: E402  (one "equal but for time")


def files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}


def assert_same_study(out: Path, clean: Path) -> None:
    assert files(out) == files(clean)
    assert csv_without_seconds(out / "results.csv") == csv_without_seconds(clean / "results.csv")
    for name in ("summary.csv", "comparisons.csv"):
        assert csv_without_seconds(out / name) == csv_without_seconds(clean / name)
    for run_dir in sorted((clean / "trials").iterdir()):
        other = out / "trials" / run_dir.name
        assert csv_without_seconds(other / "history.csv") == csv_without_seconds(run_dir / "history.csv")
        assert without_timing(json.loads((other / "metrics.json").read_text())) == \
            without_timing(json.loads((run_dir / "metrics.json").read_text()))
        assert (other / "predictions_test.csv").read_text() == (run_dir / "predictions_test.csv").read_text()
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("claim.lock")) and not list(out.rglob("running.json"))


def assert_status_matches_files(out: Path) -> None:
    """`medablate status` says done exactly for runs with a done metrics.json, interrupted for those with a
    checkpoint, pending for the rest (the killed process holds no claim any more)."""
    from medablate.execute.status import study_status

    for row in study_status(out):
        run_dir = out / "trials" / row["run"]
        expected = "done" if (run_dir / "metrics.json").exists() else \
            "interrupted" if (run_dir / "last.pt").exists() or (run_dir / "history.csv").exists() else "pending"
        assert row["status"] == expected, (row, expected)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("injection")
    study = write_study(root, training={"epochs": 3})
    result = medablate("run", str(study), "--out", str(root / "clean"))  # the reference needs no process of its own
    assert result.returncode == 0, result.stderr
    return {"study": study, "out": root / "clean"}


@pytest.mark.parametrize("point", [p if p in DEFAULT_POINTS else pytest.param(p, marks=pytest.mark.slow)
                                   for p in KILL_POINTS])
def test_a_kill_at_every_named_point_then_a_rerun_gives_the_same_study(clean: dict[str, Path], tmp_path: Path,
                                                                       point: str) -> None:
    out = tmp_path / "out"
    killed = run(clean["study"], out, point)
    assert killed.returncode == -signal.SIGKILL, f"the point {point} was not reached: {killed.stderr[-500:]}"
    if (out / "study.json").exists():
        assert_status_matches_files(out)
    rerun = medablate("run", str(clean["study"]), "--out", str(out))  # the rerun needs no process of its own
    assert rerun.returncode == 0, rerun.stderr
    assert_same_study(out, clean["out"])
    status = medablate("status", str(out))
    assert status.returncode == 0 and status.stdout.count("done") >= 2 and "2 done" in status.stdout


def test_every_named_point_is_in_the_suite() -> None:
    assert set(faults.POINTS) <= {p.split("@")[0] for p in KILL_POINTS}
    assert DEFAULT_POINTS <= set(KILL_POINTS)
