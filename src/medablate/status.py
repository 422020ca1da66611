"""The state of every run of a study, read from its folder alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medablate import rundir
from medablate.plan import expand


def study_status(out: Path) -> list[dict[str, Any]]:
    _, study = rundir.read_study_info(out)
    plan = expand(study)
    rows = []
    for run in plan.runs:
        run_dir = rundir.trial_dir(out, run.id)
        metrics = rundir.metrics_or_empty(run_dir)
        history = rundir.read_history(run_dir)
        best = rundir.checkpoint_val_acc(metrics, history) if metrics else None
        if best is None and history:  # unfinished: the checkpoint so far is unknown here; show the latest epoch
            best = history[-1]["val_acc"]
        test = (metrics.get("test") or {}).get("accuracy")
        rows.append({"run": run.id, "status": rundir.run_status(run_dir),
                     "epochs": f"{len(history)}/{run.trial.config.training.epochs}",
                     "val_acc": f"{best:.3f}" if best is not None else "–",
                     "test_acc": f"{test:.3f}" if test is not None else "–"})
    return rows
