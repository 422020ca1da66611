"""results.csv and tables.md, built from the saved per-run files only (never from memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medablate.config.schema import flatten
from medablate.core import atomic
from medablate.execute.plan import Plan, Run
from medablate.folder import layout, rundir
from medablate.folder.records import EnsembleRecord

METRIC_COLUMNS = ["seed", "status", "best_epoch", "best_val_loss", "val_acc", "highest_val_acc", "highest_val_acc_epoch",
                  "final_val_acc", "test_acc", "test_loss", "epochs_done", "seconds"]


def result_row(out: Path, run: Run) -> dict[str, Any]:
    run_dir = rundir.trial_dir(out, run.id)
    metrics = rundir.metrics_or_none(run_dir)
    status = rundir.run_status(run_dir)
    row: dict[str, Any] = {"trial": run.trial.id, "run": run.id, "comparisons": ";".join(run.trial.comparisons)}
    row.update(run.trial.labels)
    row.update({k: getattr(metrics, k, None) for k in METRIC_COLUMNS})
    if run.fold is not None:
        row["fold"] = run.fold.label
    if metrics is None:
        return row | {"seed": run.seed, "status": status}
    row.update(seed=run.seed, status=status, val_acc=rundir.checkpoint_val_acc(metrics, rundir.read_history(run_dir)),
               highest_val_acc=rundir.highest_val_acc(metrics),
               highest_val_acc_epoch=metrics.highest_val_acc_epoch if "highest_val_acc_epoch" in metrics.model_fields_set
               else metrics.best_val_acc_epoch)
    row.update(test_acc=metrics.test.accuracy if metrics.test else None,
               test_loss=metrics.test.loss if metrics.test else None)
    return row


def ensemble_row(trial: Any, record: EnsembleRecord) -> dict[str, Any]:
    """A derived row: the trial's seed ensemble (status 'ensemble', seed 'ensemble'), at the loss's rule."""
    row: dict[str, Any] = {"trial": trial.id, "run": f"{trial.id}-ensemble", "comparisons": ";".join(trial.comparisons),
                           "seed": "ensemble", "status": "ensemble"}
    row.update(trial.labels)
    evaluation = record.evaluation
    row["val_acc"] = evaluation.val.at_rule.accuracy if evaluation.val else None
    row["test_acc"] = evaluation.test.at_rule.accuracy if evaluation.test else None
    return row


def write_results(out: Path, plan: Plan, data_note: str,
                  ensembles: dict[str, EnsembleRecord] | None = None) -> list[dict[str, Any]]:
    rows = [result_row(out, run) for run in plan.runs]
    rows += [ensemble_row(t, ensembles[t.id]) for t in plan.trials if ensembles and t.id in ensembles]
    for row in rows:
        row["data"] = data_note
    metric_columns = METRIC_COLUMNS[:1] + ["fold"] + METRIC_COLUMNS[1:] if plan.folds else METRIC_COLUMNS
    columns = ["trial", "run", "comparisons", *plan.varied_keys, *metric_columns, "data"]
    atomic.write_csv(Path(out) / layout.RESULTS_CSV, rows, columns)
    return rows




def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def comparison_tables(plan: Plan, comparison: str, base_flat: dict[str, Any], rows: list[dict[str, Any]],
                      varied: list[str]) -> list[str]:
    trials = plan.trials_of(comparison)
    flats = {t.id: flatten(t.config.model_dump(mode="json")) for t in trials}
    differing = sorted({k for f in flats.values() for k in f if any(g.get(k) != f.get(k) for g in flats.values())})
    lines = [f"## Comparison: {comparison}", "", f"Varied: {', '.join(varied)}.", "",
             "### Hyperparameters (what differs)", ""]
    lines += _table(["trial", *differing], [[t.id, *(flats[t.id].get(k) for k in differing)] for t in trials])
    shared = {k: v for k, v in base_flat.items() if k not in differing}
    lines += ["", "### Hyperparameters (shared)", ""]
    lines += _table(["key", "value"], [[k, v] for k, v in shared.items()])
    lines += ["", "### Results", ""]
    ids = {t.id for t in trials}
    keep = ["trial", "seed", *(["fold"] if plan.folds else []), "status", "best_epoch", "best_val_loss", "val_acc",
            "highest_val_acc", "highest_val_acc_epoch",
            "final_val_acc", "test_acc", "test_loss", "seconds"]
    lines += _table(keep, [[r.get(k) for k in keep] for r in rows if r["trial"] in ids])
    return lines + [""]


def write_tables(out: Path, plan: Plan, study_name: str, comparisons: dict[str, list[str]],
                 base_flat: dict[str, Any], rows: list[dict[str, Any]], notes: list[str],
                 extra: list[str] = ()) -> None:  # type: ignore[assignment]
    lines = [f"# Study: {study_name}", ""]
    lines += [f"> **Note:** {note}" for note in notes] + ([""] if notes else [])
    if not comparisons:
        lines += _table(["key", "value"], [[k, v] for k, v in base_flat.items()]) + [""]
    for name, varied in comparisons.items():
        lines += comparison_tables(plan, name, base_flat, rows, varied)
    lines += list(extra)
    atomic.write_text(Path(out) / layout.TABLES_MD, "\n".join(lines))
