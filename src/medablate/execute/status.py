"""The state of every run of a study, read from its folder alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medablate.execute.executors import slurm
from medablate.execute.plan import expand, read_study
from medablate.folder import rundir

QUEUED = "queued"  # pending, and its Slurm task waits in the queue


def planned_runs(out: Path) -> list[tuple[str, int]]:
    """(run id, epochs) of every run: from study.json's run list (no torch needed), else by expanding the study."""
    info = rundir.read_study_info(out)
    if info.run_list:
        return [(r.run, r.epochs) for r in info.run_list]
    return [(run.id, run.trial.config.training.epochs) for run in expand(read_study(out)[1]).runs]


def study_status(out: Path) -> list[dict[str, Any]]:
    rows = []
    queued = slurm.queued_runs(out) if slurm.jobs_file(out).exists() else {}  # --executor slurm: the queue's word
    for run_id, epochs in planned_runs(out):
        run_dir = rundir.trial_dir(out, run_id)
        metrics = rundir.metrics_or_none(run_dir)
        history = rundir.read_history(run_dir)
        best = rundir.checkpoint_val_acc(metrics, history) if metrics else None
        if best is None and history:  # unfinished: the checkpoint so far is unknown here; show the latest epoch
            best = history[-1]["val_acc"]
        test = metrics.test.accuracy if metrics and metrics.test else None
        status = rundir.run_status(run_dir)
        if status == rundir.PENDING and queued.get(run_id, "").endswith("PENDING"):
            status = QUEUED
        rows.append({"run": run_id, "status": status, "slurm": queued.get(run_id, ""),
                     "epochs": f"{len(history)}/{epochs}",
                     "val_acc": f"{best:.3f}" if best is not None else "–",
                     "test_acc": f"{test:.3f}" if test is not None else "–",
                     "disk": human_size(disk_used(run_dir)),
                     "problem": rundir.damage_of(run_dir) if status == rundir.DAMAGED else ""})
    return rows


def disk_used(folder: Path) -> int:
    """Bytes of the files in a run folder (links not followed: a checkpoint's slot file counts once)."""
    if not folder.is_dir():
        return 0
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"
