"""The names of a study folder's and a run folder's files, and the checks of a folder's shape that need nothing
but the file system. It imports nothing heavy, so the command line checks its arguments with it before it loads
torch, matplotlib or scipy (`medablate compare /nonexistent` answers at once)."""

from __future__ import annotations

from pathlib import Path

from medablate.errors import UserError

STUDY_JSON, SPLIT_CSV, RESULTS_CSV = "study.json", "split.csv", "results.csv"
SUMMARY_CSV, COMPARISONS_CSV, TABLES_MD = "summary.csv", "comparisons.csv", "tables.md"
CONFIG_YAML, HISTORY_CSV, METRICS_JSON = "config.yaml", "history.csv", "metrics.json"
BEST_PT, LAST_PT, EXAMPLES_JSON = "best.pt", "last.pt", "examples.json"
FIGURES_JSON = "figures.json"  # which metrics.json a run's figures and examples were drawn from (run_figures)
METHODS_MD, TABLES_TEX, REPORT_HTML, REPORT_MD = "methods.md", "tables.tex", "report.html", "report.md"
TRIALS, FIGURES, ENSEMBLES = "trials", "figures", "ensembles"  # DIR/trials/<run id>/, DIR/figures/, DIR/ensembles/
EXAMPLES, EVALUATIONS = "examples", "evaluations"  # in a run folder: examples/<kind>-<n>.png, evaluations/<name>.json
MLFLOW_JSON = "mlflow.json"  # tracking.mlflow: in the study folder the experiment and trials' parent runs, in a run
# folder its MLflow run and the last epoch logged (medablate.execute.mlflow_log)
EXPORTED = "exported"  # in a run folder: exported/model.pt | model.onnx and its model.json (medablate export)
SLURM = "slurm"  # --executor slurm: DIR/slurm/jobs.json (the arrays submitted) and submitit's scripts and logs
JOBS_JSON = "jobs.json"
CURVES_PNG, ROC_PNG, PR_PNG = "curves.png", "roc.png", "pr.png"  # a run's figures
RELIABILITY_PNG, CONFUSION_PNG = "reliability.png", "confusion.png"
CLAIM_LOCK = "claim.lock"  # medablate.folder.claims
ROBUSTNESS_CSV = "robustness.csv"  # evaluation.shifts: a run's panel (a row per shift and severity); in DIR, per trial


def require_finished_run(run_dir: Path) -> Path:
    """A run folder that finished training (best.pt and config.yaml there), for predict; else the UserError."""
    run_dir = Path(run_dir)
    if (run_dir / STUDY_JSON).exists():
        raise UserError(f"{run_dir} is a study folder, not a run folder: pass one of its runs, "
                        f"{run_dir / TRIALS}/<trial>-seed<k> (medablate status {run_dir} lists them).")
    if not (run_dir / BEST_PT).exists():
        raise UserError(f"{run_dir} has no {BEST_PT}: it is not a finished trial folder "
                        f"(DIR/{TRIALS}/<trial>-seed<k>). Run or resume the study, or pick a trial that "
                        "`medablate status DIR` lists as done.")
    if not (run_dir / CONFIG_YAML).exists():
        raise UserError(f"{run_dir / CONFIG_YAML} is missing, so the model and its preprocessing cannot be "
                        "rebuilt exactly: restore it (e.g. from a backup), or rerun the study to recreate the run.")
    return run_dir


def ensemble_dir(out: Path, trial_id: str) -> Path:
    """DIR/ensembles/<trial>/: a trial's seed ensemble (its metrics.json and predictions)."""
    return Path(out) / ENSEMBLES / trial_id


def predictions_file(run_dir: Path, split: str, suffix: str = "") -> Path:
    """predictions_<split>.csv (an ensemble's: predictions_<split>_ensemble.csv)."""
    return Path(run_dir) / f"predictions_{split}{suffix}.csv"


def evaluation_files(run_dir: Path, name: str) -> tuple[Path, Path]:
    """`medablate evaluate --name NAME`'s record and per-image predictions."""
    folder = Path(run_dir) / EVALUATIONS
    return folder / f"{name}.json", folder / f"{name}_predictions.csv"


def evaluation_record_of(predictions: Path) -> Path:
    """The record written beside an evaluation's per-image predictions (evaluation_files' pair)."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.name.removesuffix("_predictions.csv") + ".json")


def require_study_folder(out: Path) -> Path:
    """A folder `medablate run` wrote (it has study.json), or the UserError that says what to pass instead."""
    if not (Path(out) / STUDY_JSON).is_file():
        raise UserError(f"{out} is not a study folder (no {STUDY_JSON}): pass the --out folder of a `medablate run`, "
                        "by default runs/<study name>.")
    return Path(out)


def require_run_folder(run_dir: Path, checkpoint: str = BEST_PT) -> Path:
    """A run folder with the checkpoint, or the UserError that says what to pass instead."""
    path = Path(run_dir) / checkpoint
    if not Path(run_dir).is_dir():
        raise UserError(f"trial folder {run_dir} does not exist: pass a folder under DIR/{TRIALS}/ "
                        "(medablate status DIR lists them).")
    if not path.exists():
        if (Path(run_dir) / STUDY_JSON).exists():
            raise UserError(f"{run_dir} is a study folder, not a run folder: pass one of its runs, "
                            f"{run_dir}/{TRIALS}/<trial>-seed<k> (medablate status {run_dir} lists them).")
        raise UserError(f"{path} does not exist: the trial has no {Path(checkpoint).stem} checkpoint yet (it has not "
                        "finished an epoch, or it diverged first). Run or resume the study, or pick another trial.")
    return path
