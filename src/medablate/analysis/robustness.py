"""The robustness panel across a study (evaluation.shifts): per trial, shift and severity, the mean over its seeds
(or folds x seeds) of each run's shifted scores, with the 95% t interval over them, as DIR/robustness.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medablate.analysis import stats
from medablate.core import atomic
from medablate.execute.plan import Plan
from medablate.folder import layout, rundir

METRICS = ("accuracy", "roc_auc", "sensitivity", "specificity")
COLUMNS = ["trial", "shift", "severity", "level", "runs"] + [f"{m}_{s}" for m in METRICS
                                                             for s in ("mean", "sd", "ci_low", "ci_high")]


def trial_rows(out: Path, plan: Plan) -> list[dict[str, Any]]:
    """A row per trial, shift and severity, from the robustness.csv of each finished run of the trial."""
    rows = []
    for trial in plan.trials:
        panels = [rundir.read_robustness(d) for d in plan.run_dirs(out, trial) if rundir.finished_metrics(d)]
        panels = [p for p in panels if p]
        keys = list(dict.fromkeys((r["shift"], r["severity"]) for panel in panels for r in panel))
        for shift, severity in keys:
            found = [r for panel in panels for r in panel if (r["shift"], r["severity"]) == (shift, severity)]
            row: dict[str, Any] = {"trial": trial.id, "shift": shift, "severity": int(severity),
                                   "level": found[0]["level"], "runs": len(found)}
            for metric in METRICS:
                values = [r[metric] for r in found if r.get(metric) is not None]
                mean, sd, low, high = stats.mean_sd_ci(values, bounds=(0.0, 1.0))
                row |= {f"{metric}_mean": mean, f"{metric}_sd": sd, f"{metric}_ci_low": low, f"{metric}_ci_high": high}
            rows.append(row)
    return rows


def write_table(out: Path, plan: Plan) -> list[dict[str, Any]]:
    """DIR/robustness.csv (removed when no run has a panel); its rows."""
    rows = trial_rows(out, plan)
    path = Path(out) / layout.ROBUSTNESS_CSV
    if rows:
        atomic.write_csv(path, rows, COLUMNS)
    else:
        path.unlink(missing_ok=True)
    return rows
