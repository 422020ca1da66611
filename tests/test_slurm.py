"""`medablate run --executor slurm` (issue 23): a study's runs as one Slurm job array, requeued tasks resume.

The tests marked `slurm` need a running Slurm: `bash scripts/slurm_up.sh` starts a one-node one here (as root), and
.ci/run starts it and runs them with `-m slurm` (with MEDABLATE_REQUIRE_SLURM=1 there, so a Slurm that did not
start fails them instead of skipping). The others check what needs no Slurm.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_study
from test_cli import assert_user_error, medablate

pytest.importorskip("submitit", reason="submitit is an optional extra: pip install 'medablate[slurm]'")


def slurm_running() -> str:
    """Why Slurm cannot be used here ('' when it can)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm commands on PATH (bash scripts/slurm_up.sh starts a one-node Slurm)"
    try:
        found = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 10 s"
    if not any(state.strip() in ("idle", "mixed", "allocated") for state in found.stdout.splitlines()):
        return f"no Slurm node is up (sinfo: {found.stdout.strip() or found.stderr.strip()})"
    return ""


@pytest.fixture(scope="module")
def slurm() -> None:
    problem = slurm_running()
    if problem and os.environ.get("MEDABLATE_REQUIRE_SLURM") == "1":
        pytest.fail(f"MEDABLATE_REQUIRE_SLURM=1 but {problem}")
    if problem:
        pytest.skip(problem)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(handle)]


def in_queue(out: Path) -> list[str]:
    arrays = json.loads((out / "slurm" / "jobs.json").read_text())["arrays"]
    found = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(a["job_id"] for a in arrays), "-o", "%i"],
                           capture_output=True, text=True, timeout=30)
    return found.stdout.split()


def slurm_ids(pid: int) -> str:
    """The array task (`<array>_<index>`) a process of this machine belongs to, from its environment."""
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"


def release(task: str) -> None:
    """A requeued job may start only two minutes later (its BeginTime): let it start as soon as it is pending."""
    deadline, requeued = time.monotonic() + 60, False
    while time.monotonic() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", task, "-o", "%T %r"], capture_output=True, text=True,
                               timeout=30).stdout.split()
        requeued = requeued or state[:1] != ["RUNNING"]
        if state[:2] == ["PENDING", "BeginTime"]:
            subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True, timeout=30)
        elif requeued and state[:1] in (["RUNNING"], []):
            return
        time.sleep(0.2)


# ------------------------------------------------------------------ no Slurm needed


def test_slurm_options_need_the_slurm_executor_and_slurm_itself(study_file: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for args in (["--detach"], ["--slurm-partition", "gpu"], ["--slurm-cpus", "2"]):
        result = medablate("run", str(study_file), "--out", str(tmp_path / "out"), *args)
        assert_user_error(result, "--executor slurm")
    result = medablate("run", str(study_file), "--executor", "slurm", "--slurm-time", "1:2:3:4", "--dry-run")
    assert_user_error(result, "runtime.slurm.time")
    assert "H:MM:SS" in result.stderr
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # python, but no sbatch
    result = medablate("run", str(study_file), "--executor", "slurm", "--out", str(tmp_path / "out"))
    assert_user_error(result, "sbatch")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_runtime_slurm_becomes_submitits_parameters() -> None:
    from medablate.config.schema import SlurmConfig
    from medablate.execute.executors.slurm import parameters

    assert [SlurmConfig(time=t).time for t in (90, "90", "1:30:00", "2-00:00:00", "0:30")] == [90, 90, 90, 2880, 1]
    plain = parameters(SlurmConfig(), "medablate-x", "auto")
    assert plain["timeout_min"] == 60 and plain["cpus_per_task"] == 1 and "gpus_per_node" not in plain
    assert parameters(SlurmConfig(), "x", "cuda")["gpus_per_node"] == 1  # a study that asks for a GPU gets one
    full = parameters(SlurmConfig(partition="gpu", gpus=2, cpus=8, parallelism=3, account="lab", setup=["module load cuda"],
                                  additional={"reservation": "course"}, mem_gb=16), "x", "cpu")
    assert full["slurm_partition"] == "gpu" and full["gpus_per_node"] == 2 and full["cpus_per_task"] == 8
    assert full["slurm_array_parallelism"] == 3 and full["slurm_account"] == "lab" and full["mem_gb"] == 16
    assert full["slurm_setup"] == ["module load cuda"] and full["slurm_additional_parameters"] == {"reservation": "course"}


TASK = """
import signal, sys
from pathlib import Path
from medablate.config.schema import load_study, to_plain
from medablate.execute.executors.slurm import SlurmTask

def requeue(signum, frame):  # stands for submitit's handler: checkpoint, `scontrol requeue`, exit
    Path(sys.argv[3]).write_text("requeued")
    sys.exit(-1)

signal.signal(signal.SIGUSR2, requeue)
study = to_plain(load_study(Path(sys.argv[1]), [])[0])
print(SlurmTask()(study, sys.argv[2], "base-seed0", 1, None))
"""


def test_a_task_near_its_time_limit_checkpoints_mid_epoch_then_requeues_and_resumes(tmp_path: Path) -> None:
    """Slurm's warning before the time limit (SIGUSR2) stops the run after the batch in progress, with a checkpoint
    of it, then hands over to submitit's requeue; the requeued task finishes the run with the same numbers."""
    study = write_study(tmp_path, training={"epochs": 3}, comparisons=[])
    out = tmp_path / "out"
    assert medablate("run", str(study), "--out", str(out), "--threads", "1").returncode == 0
    run_dir = out / "trials" / "base-seed0"
    expected = rows(run_dir / "history.csv")
    shutil.rmtree(run_dir)
    requeued = tmp_path / "requeued"
    env = {**os.environ, "MEDABLATE_KILL_AT": "batch@5", "MEDABLATE_KILL_SIGNAL": "USR2", "OMP_NUM_THREADS": "1"}
    first = subprocess.run([sys.executable, "-c", TASK, str(study), str(out), str(requeued)], env=env,
                           capture_output=True, text=True)
    assert requeued.read_text() == "requeued", first.stdout + first.stderr
    assert first.returncode != 0 and "stopped by signal [12]" in first.stdout, first.stdout + first.stderr
    assert len(rows(run_dir / "history.csv")) == 1  # 4 batches an epoch: stopped in the second epoch
    second = subprocess.run([sys.executable, "-c", TASK, str(study), str(out), str(requeued)],
                            env={**env, "MEDABLATE_KILL_AT": ""}, capture_output=True, text=True)
    assert second.returncode == 0 and "1 epoch(s) done before" in second.stdout, second.stdout + second.stderr
    assert "('done', '')" in second.stdout
    assert rows(run_dir / "history.csv") == expected


# ------------------------------------------------------------------ a real Slurm


def frozen(marker: Path, driver: subprocess.Popen[str], deadline: float) -> int:
    """The process id a fault point wrote into its marker once it stopped itself there."""
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert marker.exists() and marker.read_text(), "no task reached its second epoch: the test proves nothing"
    return int(marker.read_text())


@pytest.mark.slurm
def test_a_slurm_study_equals_a_sequential_run_though_tasks_are_requeued_or_killed_mid_run(
        tmp_path: Path, slurm: None) -> None:
    study = write_study(tmp_path, seeds=[0, 1], training={"epochs": 4})  # 2 trials x 2 seeds
    sequential, clustered, marker = tmp_path / "sequential", tmp_path / "slurm", tmp_path / "stopped"
    assert medablate("run", str(study), "--out", str(sequential), "--threads", "1").returncode == 0
    # the first two tasks to write their second epoch's checkpoint freeze themselves (SIGSTOP): caught mid-run
    env = {**os.environ, "MEDABLATE_KILL_AT": "after-checkpoint@2", "MEDABLATE_KILL_SIGNAL": "STOP",
           "MEDABLATE_KILL_ONCE": str(marker), "MEDABLATE_KILL_COUNT": "2"}
    driver = subprocess.Popen([sys.executable, "-m", "medablate.cli", "run", str(study), "--executor", "slurm",
                               "--out", str(clustered)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 180
        requeued = slurm_ids(frozen(marker, driver, deadline))
        # what an administrator or a preemption does: Slurm stops the task (SIGTERM) and queues it again
        subprocess.run(["scontrol", "requeue", requeued], check=True, timeout=30)
        release(requeued)
        victim = frozen(Path(f"{marker}.2"), driver, deadline)
        killed = slurm_ids(victim)
        os.kill(victim, 9)  # what the out-of-memory killer or a lost node does: no word, no checkpoint of the batch
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output
    log = (clustered / "slurm" / f"{requeued}_0_log.out").read_text()
    assert "restart 0" in log and "stopped by signal" in log  # the task stopped at Slurm's word ...
    restarted = next(line for line in log.splitlines() if "restart 1" in line)
    assert "0 epoch(s) done before" not in restarted  # ... and its second start resumed the run
    assert "submitted again" in " ".join(output.split())  # the killed task's run went to a new array ...
    run = json.loads((clustered / "slurm" / "jobs.json").read_text())["arrays"][0]["runs"][int(killed.split("_")[1])]
    again = json.loads((clustered / "slurm" / "jobs.json").read_text())["arrays"][1]
    assert again["runs"] == [run]
    resumed = (clustered / "slurm" / f"{again['tasks'][0]}_0_log.out").read_text()
    assert "0 epoch(s) done before" not in resumed  # ... and resumed it from its checkpoint
    assert rows(clustered / "results.csv") == rows(sequential / "results.csv")
    for run_dir in (sequential / "trials").iterdir():
        assert rows(clustered / "trials" / run_dir.name / "history.csv") == rows(run_dir / "history.csv")
        metrics = json.loads((clustered / "trials" / run_dir.name / "metrics.json").read_text())
        assert metrics["status"] == "done" and metrics["threads"] == 1
        assert (clustered / "trials" / run_dir.name / "curves.png").exists()  # drawn by the task
    info = json.loads((clustered / "study.json").read_text())
    assert info["executor"] == "slurm" and info["status"] == "finished" and (clustered / "report.html").exists()


@pytest.mark.slurm
def test_detach_then_status_then_report(tmp_path: Path, slurm: None) -> None:
    study = write_study(tmp_path, seeds=[0, 1], training={"epochs": 2}, comparisons=[])
    out = tmp_path / "out"
    result = medablate("run", str(study), "--executor", "slurm", "--detach", "--slurm-time", "0:10:00", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "medablate status" in result.stderr and "medablate report" in result.stderr
    info = json.loads((out / "study.json").read_text())
    assert info["status"] == "submitted" and not (out / "report.html").exists()
    array = json.loads((out / "slurm" / "jobs.json").read_text())["arrays"][0]
    assert array["runs"] == ["base-seed0", "base-seed1"] and array["parameters"]["timeout_min"] == 10
    shown = medablate("status", str(out))
    assert shown.returncode == 0 and f"{array['job_id']}_0" in shown.stdout  # the queue's word on each run
    deadline = time.monotonic() + 180
    while in_queue(out) and time.monotonic() < deadline:
        time.sleep(1)
    assert not in_queue(out), "the array did not finish within 3 minutes"
    shown = medablate("status", str(out))
    assert shown.returncode == 0 and "2 done" in shown.stdout
    result = medablate("report", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "report.html").exists() and (out / "summary.csv").exists()
    assert json.loads((out / "study.json").read_text())["status"] == "finished"
