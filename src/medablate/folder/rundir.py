"""The run folder is the contract between steps: how each file is read back and written, through the typed
records of records.py and the names of layout.py. Every reader goes through this package, so a folder written by
another format is read correctly or refused, never misread.

    DIR/study.json  results.csv  summary.csv  comparisons.csv  split.csv  tables.md  figures/<comparison>.png
    DIR/trials/<trial>-seed<k>/config.yaml  history.csv  metrics.json  best.pt  last.pt  curves.png
                               (kfold: <trial>-rep<r>-fold<f>-seed<k>)
                               predictions_val.csv  predictions_test.csv  examples.json  examples/  claim.lock
                               roc.png  pr.png  reliability.png  confusion.png  figures.json (drawn after the runs)
                               evaluations/<name>.json, <name>_predictions.csv (medablate evaluate)
    DIR/ensembles/<trial>/metrics.json  predictions_val_ensemble.csv  predictions_test_ensemble.csv

Format history: 1 (medablate 0.1.0: no `format` key, `best_val_acc` = highest at any epoch); 2 (`format`,
`val_acc` of the checkpoint used, `highest_val_acc`, `evaluation_config`, `threads`; study.json records the
split used and the intensity rule); 3 (every file written from its typed record: RunRecord, StudyInfo,
EnsembleRecord, Example, FiguresRecord, ClaimRecord, EvaluationFile; the same keys as format 2). Folders of formats
1 and 2 are read (missing values are derived from the history); tests/data keeps one of each.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import yaml
from pydantic import ValidationError

from medablate.core import atomic
from medablate.core.yamlfile import load_yaml
from medablate.errors import UserError
from medablate.folder import claims
from medablate.folder.checkpoint import DamagedCheckpoint, load_checkpoint, read_checkpoint, save_checkpoint
from medablate.folder.layout import BEST_PT as BEST_PT
from medablate.folder.layout import COMPARISONS_CSV as COMPARISONS_CSV
from medablate.folder.layout import CONFIG_YAML as CONFIG_YAML
from medablate.folder.layout import EXAMPLES_JSON as EXAMPLES_JSON
from medablate.folder.layout import FIGURES_JSON as FIGURES_JSON
from medablate.folder.layout import HISTORY_CSV as HISTORY_CSV
from medablate.folder.layout import LAST_PT as LAST_PT
from medablate.folder.layout import METRICS_JSON as METRICS_JSON
from medablate.folder.layout import RESULTS_CSV as RESULTS_CSV
from medablate.folder.layout import ROBUSTNESS_CSV as ROBUSTNESS_CSV
from medablate.folder.layout import SPLIT_CSV as SPLIT_CSV
from medablate.folder.layout import STUDY_JSON as STUDY_JSON
from medablate.folder.layout import SUMMARY_CSV as SUMMARY_CSV
from medablate.folder.layout import TABLES_MD as TABLES_MD
from medablate.folder.layout import TRIALS, ensemble_dir, predictions_file, require_study_folder
from medablate.folder.records import (
    FORMAT,
    ROBUSTNESS_COLUMNS,
    EnsembleRecord,
    Example,
    FiguresRecord,
    HistoryRow,
    PredictionRows,
    RunRecord,
    StudyInfo,
)

DONE: Literal["done"] = "done"  # the statuses a run's record can hold
DIVERGED: Literal["diverged"] = "diverged"
FAILED: Literal["failed"] = "failed"
RUNNING, INTERRUPTED, PENDING = "running", "interrupted", "pending"  # what its folder shows without a record
DAMAGED = "damaged"  # metrics.json exists but cannot be read: the run is redone from its last good checkpoint
FINISHED = (DONE, DIVERGED)



class Fold(NamedTuple):
    """kfold: which repetition of the k-fold split, and which of its folds validates (both from 1)."""

    repeat: int
    fold: int

    @property
    def label(self) -> str:
        return f"rep{self.repeat}-fold{self.fold}"


def run_id(trial_id: str, seed: int, fold: Fold | None = None) -> str:
    """The one spelling of a run's id and folder name."""
    return f"{trial_id}-{fold.label}-seed{seed}" if fold is not None else f"{trial_id}-seed{seed}"


def _check_format(found: int, path: Path) -> None:
    if found > FORMAT:
        raise UserError(f"{path} has format {found}, written by a newer medablate than this one (which reads formats "
                        f"up to {FORMAT}): upgrade medablate (pip install -U medablate) to read this folder.")


class DamagedFile(Exception):
    """A run-folder file that exists but cannot be read as its format says."""


def read_metrics(run_dir: Path) -> RunRecord | None:
    """metrics.json as its record (None when it does not exist); DamagedFile when it cannot be read."""
    path = Path(run_dir) / METRICS_JSON
    if not path.exists():
        return None
    try:
        record = RunRecord.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:  # JSONDecodeError and pydantic's ValidationError are ValueErrors
        raise DamagedFile(f"{path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})") from None
    _check_format(record.format, path)
    return record


def metrics_or_none(run_dir: Path) -> RunRecord | None:
    """For readers that show what there is: a missing or damaged metrics.json reads as no record."""
    try:
        return read_metrics(run_dir)
    except DamagedFile:
        return None


def copy_training(source: Path, target: Path) -> None:
    """What a finished run's training wrote (history, checkpoints, predictions), into another run's folder: a run
    whose trial trains the same models takes them (it differs only in how it is scored). Each file is written as
    the run writes it (atomic, checkpoints in their slots), so a kill leaves nothing half-copied."""
    source, target = Path(source), Path(target)
    for name in (HISTORY_CSV, predictions_file(source, "val").name, predictions_file(source, "test").name):
        if (source / name).exists():
            atomic.write_bytes(target / name, (source / name).read_bytes())
    for name in (BEST_PT, LAST_PT):
        if (source / name).exists():
            save_checkpoint(target / name, load_checkpoint(source / name))


def write_metrics(run_dir: Path, record: RunRecord | EnsembleRecord) -> None:
    """metrics.json (a run's done marker, or an ensemble's record)."""
    atomic.write_json(Path(run_dir) / METRICS_JSON, record.plain())


def validated_threshold(run_dir: Path, binary: bool) -> float | None:
    """The decision threshold chosen on validation for a finished run (None for multi-class runs). Its metrics.json
    holds it: when that file is missing or damaged, the threshold is unknown, and silently deciding at 0.5 instead
    would change decisions without a word, so this is a UserError that says how to rebuild the file."""
    try:
        metrics = read_metrics(run_dir)
    except DamagedFile as exc:
        problem = str(exc)
    else:
        if metrics and metrics.status == DONE:
            return metrics.threshold
        problem = f"{Path(run_dir) / METRICS_JSON} " + ("is missing" if metrics is None else
                                                         f"records a run that {metrics.status}")
    if not binary:
        return None
    raise UserError(f"{problem}, so the decision threshold validated for this run is unknown, and deciding at 0.5 "
                    "instead would silently change decisions. Run the study again with its study file and --out (it "
                    "rebuilds the run's metrics.json from its checkpoints, with the same numbers), then retry.")


def trial_dir(out: Path, run_id: str) -> Path:
    return Path(out) / TRIALS / run_id


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _parse_history(path: Path) -> list[HistoryRow]:
    """Every row with every column a number (empty = NaN); ValueError for a cut or edited file."""
    with path.open() as handle:
        reader = csv.DictReader(handle)
        rows = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise ValueError(f"line {reader.line_num} has {'more' if None in row else 'fewer'} cells than the header")
            rows.append({k: float(v) if v != "" else math.nan for k, v in row.items()})
    for i, parsed in enumerate(rows, 1):
        if parsed.get("epoch") != i:
            raise ValueError(f"row {i} is epoch {parsed.get('epoch')}")
    return rows


def read_study_info(out: Path) -> StudyInfo:
    """study.json as its record; a missing, damaged or unreadable file is a UserError naming it (the Study it
    records is validated by medablate.execute.plan.read_study)."""
    path = require_study_folder(out) / STUDY_JSON
    try:
        info = StudyInfo.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = f"is damaged ({type(exc).__name__}: {str(exc)[:80]})"
    except ValidationError as exc:
        problem = unreadable(exc)
    else:
        _check_format(info.format, path)
        return info
    raise damaged_study(out, path, problem)


def unreadable(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return (f"records a study this version of medablate cannot read ({exc.error_count()} problem(s), first: "
            f"{'.'.join(map(str, first['loc']))}: {first['msg']})")


def damaged_study(out: Path, path: Path, problem: str) -> UserError:
    return UserError(f"{path} {problem}: run the study again with its study file and --out {out} (it rewrites "
                     "study.json and keeps every finished run), then retry.")


def read_ensemble(out: Path, trial_id: str) -> EnsembleRecord | None:
    """A trial's seed-ensemble record (None when it has none, or it cannot be read: it is rebuilt by the analysis)."""
    path = ensemble_dir(out, trial_id) / METRICS_JSON
    try:
        return EnsembleRecord.model_validate(json.loads(path.read_text())) if path.exists() else None
    except (OSError, ValueError):
        return None


def read_examples(run_dir: Path) -> list[Example]:
    """examples.json: the test images a run's report shows (none when absent or unreadable: it is redrawn)."""
    found = read_json(Path(run_dir) / EXAMPLES_JSON)
    try:
        return [Example.model_validate(entry) for entry in found] if isinstance(found, list) else []
    except ValueError:
        return []


def write_examples(run_dir: Path, examples: list[Example]) -> None:
    atomic.write_json(Path(run_dir) / EXAMPLES_JSON, [e.plain() for e in examples])


def read_figures(run_dir: Path) -> FiguresRecord | None:
    """figures.json (None when absent or unreadable: the figures are then drawn again)."""
    found = read_json(Path(run_dir) / FIGURES_JSON)
    try:
        return FiguresRecord.model_validate(found) if isinstance(found, dict) else None
    except ValueError:
        return None


def write_figures(run_dir: Path, record: FiguresRecord) -> None:
    atomic.write_json(Path(run_dir) / FIGURES_JSON, record.plain())


def write_study_info(out: Path, info: StudyInfo) -> None:
    atomic.write_json(Path(out) / STUDY_JSON, info.plain())


def read_history(run_dir: Path) -> list[HistoryRow]:
    """history.csv; a damaged one (cut mid-row, a non-numeric cell) is rebuilt from last.pt, which holds the
    same rows, or reported naming the file."""
    path = Path(run_dir) / HISTORY_CSV
    if not path.exists():
        found = metrics_or_none(run_dir)
        rows = _history_from_checkpoint(Path(run_dir)) if found and found.status in FINISHED else None
        if rows:  # a finished run's history.csv was deleted: its last.pt holds the same rows
            _write_history(path, rows)
        return rows or []
    try:
        return _parse_history(path)
    except ValueError as exc:
        problem = str(exc)
    rows = _history_from_checkpoint(Path(run_dir))
    if rows is None:
        raise UserError(f"{path} is damaged ({problem}) and {Path(run_dir) / LAST_PT} cannot restore it: run the "
                        "study again with the same command (it redoes the run), or delete the run folder.")
    _write_history(path, rows)
    return rows


def _write_history(path: Path, rows: list[HistoryRow]) -> None:
    """history.csv as the trainer writes it (the epoch a whole number)."""
    columns = list(rows[0]) if rows else ["epoch"]
    atomic.write_csv(path, [dict(row, epoch=int(row["epoch"])) for row in rows], columns)


def _history_from_checkpoint(run_dir: Path) -> list[HistoryRow] | None:
    if not whole_checkpoint(run_dir / LAST_PT):
        return None
    try:
        state = read_checkpoint(run_dir / LAST_PT, need_model=False)
    except (DamagedCheckpoint, FileNotFoundError):
        return None
    history = state.get("history")
    return [{k: float(v) for k, v in row.items()} for row in history] if isinstance(history, list) else None


def checkpoint_val_acc(metrics: RunRecord, history: list[HistoryRow]) -> float | None:
    """Validation accuracy of the checkpoint that is used (best.pt, chosen by training.monitor); folders written
    before it was stored give it from the history row of the best epoch."""
    if metrics.val_acc is not None:
        return float(metrics.val_acc)
    epoch = metrics.best_epoch
    return float(history[int(epoch) - 1]["val_acc"]) if epoch and len(history) >= int(epoch) else None


def highest_val_acc(metrics: RunRecord) -> float | None:
    """The highest validation accuracy at any epoch (not necessarily the checkpoint's; format 1: best_val_acc)."""
    value = metrics.highest_val_acc if "highest_val_acc" in metrics.model_fields_set else metrics.best_val_acc
    return float(value) if value is not None else None


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.yaml; DamagedFile (naming the file) when it is missing, not YAML or not a mapping."""
    path = Path(run_dir) / CONFIG_YAML
    try:
        config = load_yaml(path.read_text(encoding="utf-8"), fast=True)
    except FileNotFoundError:
        raise DamagedFile(f"{path} is missing") from None
    except (OSError, ValueError, yaml.YAMLError) as exc:  # UnicodeDecodeError is a ValueError
        raise DamagedFile(f"{path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})") from None
    if not isinstance(config, dict) or not all(isinstance(config.get(k), dict) for k in ("resolved", "model",
                                                                                           "training")):
        raise DamagedFile(f"{path} is damaged (not a run's configuration: {type(config).__name__})")
    return config


def user_config(run_dir: Path) -> dict[str, Any]:
    """read_config for evaluate and predict: a missing or damaged config.yaml is a UserError with the fix."""
    try:
        return read_config(run_dir)
    except DamagedFile as exc:
        raise UserError(f"{exc}, so the model and its preprocessing cannot be rebuilt exactly: run the study again "
                        "with the same command (it redoes the run and writes config.yaml anew), or restore the file "
                        "from a backup.") from None


def whole_checkpoint(path: Path) -> bool:
    """Whether a checkpoint file is whole as far as its zip directory shows (torch.save writes a zip): a cut or
    overwritten file fails here at the cost of reading its last bytes, not the whole file."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def whole_predictions(path: Path) -> bool:
    """A predictions_*.csv with its columns and every row complete (not cut mid-row, not emptied)."""
    try:
        with Path(path).open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"image", "label", "decision"} <= set(reader.fieldnames or []):
                return False
            rows = 0
            for row in reader:
                if None in row or any(v is None or v == "" for k, v in row.items() if k != "decision_at_threshold"):
                    return False
                rows += 1
            return rows > 0
    except (OSError, ValueError):
        return False


def damage(run_dir: Path, metrics: RunRecord) -> str | None:
    """What a finished run lacks that its record says it has (None when it is whole): a file deleted, cut or
    overwritten after the run finished. Such a run is redone from its last good state by `medablate run`."""
    run_dir = Path(run_dir)
    try:
        read_config(run_dir)
    except DamagedFile as exc:
        return str(exc)
    needed: list[tuple[str, Callable[[Path], bool] | None]] = [(HISTORY_CSV, None)]
    if metrics.evaluation:
        needed.append((predictions_file(run_dir, "val").name, whole_predictions))
    if metrics.test and metrics.evaluation:
        needed.append((predictions_file(run_dir, "test").name, whole_predictions))
    if metrics.best_epoch:
        needed.append((BEST_PT, whole_checkpoint))
    if (run_dir / LAST_PT).exists() or (run_dir / LAST_PT).is_symlink():
        needed.append((LAST_PT, whole_checkpoint))
    for name, whole in needed:
        path = run_dir / name
        if name == HISTORY_CSV:
            try:
                if read_history(run_dir):  # a cut or deleted history.csv is rebuilt from last.pt when it can be
                    continue
            except UserError as exc:
                return str(exc).split(":")[0]
            return f"{path} is missing"
        if not path.exists():
            return f"{path} is missing"
        if whole is not None and not whole(path):
            return f"{path} is damaged (cut, emptied or overwritten)"
    return None


def damage_of(run_dir: Path) -> str:
    """In words, what makes a run damaged (its metrics.json, or a file its record names)."""
    try:
        metrics = read_metrics(run_dir)
    except DamagedFile as exc:
        return str(exc)
    return (damage(run_dir, metrics) if metrics else None) or "its files do not match its record"


def finished_metrics(run_dir: Path) -> RunRecord | None:
    """metrics.json of a run that finished and is whole (status done), else None: what analysis may read."""
    metrics = metrics_or_none(run_dir)
    return metrics if metrics and metrics.status == DONE and damage(run_dir, metrics) is None else None


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    atomic.write_text(Path(run_dir) / CONFIG_YAML, yaml.safe_dump(config, sort_keys=False))


def write_predictions(path: Path, ids: list[str], labels: Any, probabilities: Any, decisions: Any,
                      class_names: list[str], threshold: float | None = None) -> None:
    """One row per image: id, label, probability of each class, decision (the loss's rule), correct (0/1),
    and for binary tasks the decision at the validated threshold."""
    columns = ["image", "label", *[f"prob_{name}" for name in class_names], "decision", "correct"]
    if threshold is not None:
        columns.append("decision_at_threshold")
    rows = []
    for image, label, probs, decision in zip(ids, labels, probabilities, decisions, strict=False):
        row: dict[str, Any] = {"image": image, "label": int(label), "decision": int(decision),
                               "correct": int(int(label) == int(decision))}
        row.update({f"prob_{name}": float(p) for name, p in zip(class_names, probs, strict=False)})
        if threshold is not None:
            row["decision_at_threshold"] = int(float(probs[1]) >= threshold)
        rows.append(row)
    atomic.write_csv(path, rows, columns)


def write_robustness(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """A run's robustness panel: a row per shift and severity (evaluation.shifts)."""
    atomic.write_csv(Path(run_dir) / ROBUSTNESS_CSV, rows, ROBUSTNESS_COLUMNS)


def remove_robustness(run_dir: Path) -> None:
    """A panel the study no longer asks for (its evaluation.shifts emptied) is not left to be read as current."""
    (Path(run_dir) / ROBUSTNESS_CSV).unlink(missing_ok=True)


def read_robustness(run_dir: Path) -> list[dict[str, Any]]:
    """robustness.csv's rows with numbers as floats (None where empty); [] when the run has none."""
    path = Path(run_dir) / ROBUSTNESS_CSV
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: v if k in ("shift", "name", "only_class") else (float(v) if v else None) for k, v in row.items()}
                for row in csv.DictReader(handle)]


def read_predictions(path: Path) -> list[dict[str, str]]:
    if not Path(path).exists():
        return []
    with Path(path).open() as handle:
        return list(csv.DictReader(handle))


def read_prediction_arrays(path: Path, class_names: list[str]) -> PredictionRows | None:
    """Image ids, labels, class probabilities (N, classes) and decisions from a predictions file (None if absent)."""
    rows = read_predictions(path)
    if not rows:
        return None
    probabilities = np.array([[float(r[f"prob_{n}"]) for n in class_names] for r in rows])
    return PredictionRows([r["image"] for r in rows], np.array([int(r["label"]) for r in rows]), probabilities,
                          np.array([int(r["decision"]) for r in rows]))


def positive_curves(run_dir: Path, positive_class: str | None, splits: tuple[str, ...] = ("val", "test")) -> dict[str, tuple]:
    """Per split with saved predictions: (labels, probability of the positive class), for ROC-type figures."""
    curves = {}
    for split in splits:
        rows = read_predictions(predictions_file(run_dir, split))
        if rows and positive_class is not None:
            curves[split] = (np.array([int(r["label"]) for r in rows]),
                             np.array([float(r[f"prob_{positive_class}"]) for r in rows]))
    return curves


def remove_stale_temp_files(folder: Path, recursive: bool = False) -> int:
    """Delete half-written temp files that killed processes left behind (their atomic writes never finished);
    a live process's temp files stay. Returns how many were removed."""
    removed = 0
    for stale in (Path(folder).rglob(".*.tmp") if recursive else Path(folder).glob(".*.tmp")):
        if not atomic.owner_alive(stale.name, stale) and not (stale.name.endswith(".link.tmp")
                                                       and claims.holder(stale.parent) is not None):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def run_status(run_dir: Path) -> str:
    try:
        metrics = read_metrics(run_dir)
    except DamagedFile:
        return RUNNING if claims.holder(run_dir) is not None else DAMAGED
    if metrics:
        if metrics.status == DONE and damage(run_dir, metrics) is not None:
            return RUNNING if claims.holder(run_dir) is not None else DAMAGED
        return str(metrics.status)
    if claims.holder(run_dir) is not None:
        return RUNNING
    if (Path(run_dir) / LAST_PT).exists() or (Path(run_dir) / HISTORY_CSV).exists():
        return INTERRUPTED  # with a checkpoint cadence, epochs can be done before the first last.pt
    return PENDING
