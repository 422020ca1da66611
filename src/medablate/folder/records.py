"""What each file of a study folder holds, key by key: the typed records of the run-folder contract.

Every key medablate writes today has a type here; a record read from an older format keeps whatever else its file
holds (extra keys are allowed, so reading never loses them), and `tests/test_contract.py` checks that a freshly
written study has no key outside these records. Records are built once, by keyword, where their file is written;
readers get these objects, never the raw JSON.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

FORMAT = 3  # 3: study.json and metrics.json are RunRecord/StudyInfo exactly; 2: `format`, val_acc of best.pt; 1: none

Plain = float | int | str | bool | None | list[Any] | dict[str, Any]  # a JSON value recorded as the user wrote it


class Record(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def unknown_keys(self) -> list[str]:
        """Keys the file holds that no field types (only an older or newer writer leaves any)."""
        found = list(self.model_extra or {})
        for value in self.__dict__.values():
            children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
            found += [key for child in children if isinstance(child, Record) for key in child.unknown_keys()]
        return found

    def plain(self) -> dict[str, Any]:
        """The record as its file holds it (keys that were never set stay out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# ------------------------------------------------------------------ metrics.json


class Scores(Record):
    """Every metric of one split at one decision rule (binary; multi-class adds macro averages and per class)."""

    accuracy: float | None = None
    balanced_accuracy: float | None = None
    roc_auc: float | None = None
    pr_auc: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    ppv: float | None = None
    npv: float | None = None
    f1: float | None = None
    brier: float | None = None
    ece: float | None = None
    macro_pr_auc: float | None = None
    macro_sensitivity: float | None = None
    macro_specificity: float | None = None
    macro_ppv: float | None = None
    macro_npv: float | None = None
    macro_f1: float | None = None
    confusion_matrix: list[list[int]] = Field(default_factory=list)
    count: int = 0
    note: str | None = None  # why some metrics are undefined (one class only)
    ci95: dict[str, list[float | None]] | None = None  # 95% bootstrap interval per metric (test split)
    per_class: dict[str, Scores] | None = None  # multi-class: each class against the rest

    def metric(self, key: str) -> float | None:
        """A metric by its name (accuracy, roc_auc, ...)."""
        value = getattr(self, key, None)
        return value if isinstance(value, (int, float)) else None

    def interval(self, key: str) -> list[float | None] | None:
        """A metric's 95% bootstrap interval, when one was computed."""
        return (self.ci95 or {}).get(key)


class SplitScores(Record):
    """One split's scores at the loss's rule and, for two classes, at the validated threshold."""

    at_rule: Scores = Field(alias="at_0.5")
    at_threshold: Scores | None = None

    def at(self, rule: str) -> Scores | None:
        """"at_0.5" (the loss's rule) or "at_threshold" (the validated threshold)."""
        return self.at_rule if rule == "at_0.5" else self.at_threshold


class ThresholdChoice(Record):
    rule: float | str | dict[str, float]  # evaluation.threshold as the study gave it
    value: float | None = None
    chosen_on: str = "validation"
    ci95: list[float] | None = None  # the rule's threshold over validation resamples (bootstrap within each class)
    description: str = ""
    decision: str = ""


class EvaluationReport(Record):
    """metrics.json's `evaluation`: validation and test scores of the checkpoint used."""

    positive_class: str | None = None
    threshold: ThresholdChoice | None = None
    val: SplitScores | None = None
    test: SplitScores | None = None


class TestScore(Record):
    """metrics.json's `test`: the checkpoint's accuracy and loss on the study's test set (the loss's rule)."""

    checkpoint: str
    checkpoint_epoch: int | None = None
    accuracy: float
    loss: float
    confusion_matrix: list[list[int]]
    count: int
    class_names: list[str] = Field(default_factory=list)


class Robustness(Record):
    """metrics.json's `robustness`: the mean of the shifted scores over every shift and severity above 0, at the
    run's decision (the validated threshold with two classes); the table of every shift is the run's robustness.csv."""

    split: str  # test, or val where the study has no test split
    decision: str  # at_threshold | at_0.5
    robust_acc: float | None = None
    robust_auc: float | None = None
    shifted_sets: int = 0  # (shift, severity) pairs above severity 0


ROBUSTNESS_COLUMNS = ("shift", "name", "only_class", "severity", "level", "count", "accuracy", "accuracy_low",
                      "accuracy_high", "roc_auc", "roc_auc_low", "roc_auc_high", "balanced_accuracy", "sensitivity",
                      "sensitivity_low", "sensitivity_high", "specificity", "specificity_low", "specificity_high",
                      "ppv", "npv", "f1", "brier", "ece")


class RunRecord(Record):
    """metrics.json: a run's record, written once when every other file of the run is on disk (its done marker)."""

    format: int = 1
    run: str
    trial: str
    seed: int
    fold: list[int] | None = None  # kfold: [repeat, fold], both from 1
    train_images: int | None = None  # images the run trained and validated on (the corrected resampled t-test's
    val_images: int | None = None  # training/test ratio)
    status: Literal["done", "diverged", "failed"]
    error: str | None = None  # failed: the exception, in one line
    traceback: str | None = None  # failed
    epochs_done: int | None = None
    diverged_epoch: int | None = None
    stopped_early_epoch: int | None = None  # training.early_stopping ended the run after this epoch
    best_epoch: int | None = None  # the epoch best.pt holds (chosen by monitor)
    best_val_loss: float | None = None
    val_acc: float | None = None  # of best.pt (format 2 on)
    highest_val_acc: float | None = None  # at any epoch (format 2 on)
    highest_val_acc_epoch: int | None = None
    best_val_acc: float | None = None  # format 1: the highest validation accuracy at any epoch
    best_val_acc_epoch: int | None = None  # format 1
    monitor: str | None = None
    final_val_acc: float | None = None
    seconds: float | None = None
    synthetic_data: bool | None = None
    data_fingerprint: str | None = None
    loss: str | None = None
    num_outputs: int | None = None
    threads: int | None = None
    evaluation_config: dict[str, Plain] | None = None  # the study's evaluation section the scores were made with
    tta: str | None = None
    normalize: str | None = None
    precision: str | None = None
    channels_last: bool | None = None
    checkpoint_epoch: int | None = None
    test: TestScore | None = None
    threshold: float | None = None  # validated on the validation split (two classes)
    evaluation: EvaluationReport | None = None
    robustness: Robustness | None = None  # evaluation.shifts: the panel's summary (its table: robustness.csv)
    trained_by: str | None = None  # the run whose training (same config but the threshold rule, same seed) it took


class EnsembleRecord(Record):
    """ensembles/<trial>/metrics.json: the mean of a trial's seeds, evaluated like a run."""

    format: int = 1
    trial: str
    seeds: list[int]
    runs: list[str] = Field(default_factory=list)  # the member runs (kfold: every fold of every seed)
    threshold: float | None = None
    evaluation: EvaluationReport
    class_names: list[str]
    method: str = ""


class Overlap(Record):
    """How many evaluated images the study trained or validated on."""

    shared_images: int
    of: int
    matched_by: str  # pixels or file names


class EvaluationComparison(Record):
    """`medablate evaluate RUN --against OTHER`: the two checkpoints on the same images. Both tests hold the trained
    models fixed: they say whether these two models differ on these images, not whether their configurations do."""

    against: str  # the other run folder
    count: int
    accuracy: float
    accuracy_against: float
    right_only_here: int  # images this run decides right and the other wrong (at each loss's rule)
    right_only_there: int
    mcnemar_p: float
    roc_auc: float | None = None  # two classes: DeLong's paired test of the ROC AUCs
    roc_auc_against: float | None = None
    auc_difference: float | None = None
    auc_ci95: list[float] | None = None
    delong_z: float | None = None
    delong_p: float | None = None


class EvaluationFile(Record):
    """evaluations/<name>.json: `medablate evaluate` of one checkpoint on some images."""

    trial_dir: str
    checkpoint: str
    checkpoint_epoch: int
    data: str
    source: str
    synthetic_data: bool
    loss: str
    count: int
    accuracy: float
    loss_value: float
    class_names: list[str]
    confusion_matrix: list[list[int]]
    threshold: float | None = None
    metrics: SplitScores
    confusion_matrix_at_threshold: list[list[int]] | None = None
    classes_present: list[str] = Field(default_factory=list)
    undefined: list[str] = Field(default_factory=list)  # metrics one class cannot define
    overlap: Overlap | None = None
    warning: str | None = None
    predictions_file: str = ""
    comparison: EvaluationComparison | None = None  # with --against


class ExportRecord(Record):
    """exported/model.json beside an exported model (medablate export): what a program needs to use it right."""

    format: int = 1
    file: str
    kind: str  # torchscript or onnx
    run: str
    study: str | None = None
    classes: list[str]
    input: dict[str, Plain]
    output: dict[str, Plain]
    preprocessing: dict[str, Plain]
    threshold: float | None = None  # validated on the run's validation split (two classes)
    rule: str
    data_fingerprint: str | None = None
    medablate_version: str
    torch_version: str
    test_metrics: dict[str, Plain] | None = None  # the run's test scores at its threshold


class SlurmArray(Record):
    """One job array `--executor slurm` submitted: task i trains runs[i] as Slurm's job tasks[i] (`12_3`; a single
    run is submitted as a plain job, `12`)."""

    job_id: str
    runs: list[str]
    tasks: list[str]
    submitted: str
    parameters: dict[str, Plain] = {}


class SlurmJobs(Record):
    """DIR/slurm/jobs.json: every array submitted for the study, oldest first."""

    format: int = 1
    arrays: list[SlurmArray] = []


# ------------------------------------------------------------------ study.json


class RunListing(Record):
    run: str
    trial: str
    seed: int
    epochs: int
    fold: list[int] | None = None  # kfold: [repeat, fold]


class Duplicates(Record):
    removed: dict[str, int] = Field(default_factory=dict)  # per split
    duplicate_groups: int = 0


class DataFacts(Record):
    """study.json's `data`: what the study trained and tested on."""

    source: str | None = None
    class_names: list[str] = Field(default_factory=list)
    image_shape: list[int] = Field(default_factory=list)
    counts: dict[str, dict[str, int]] = Field(default_factory=dict)  # split -> class -> images
    intensity: str | None = None
    test_from: str | None = None
    split_used: dict[str, Plain] | None = None  # the split made: {method: source, from: ...} or the split settings
    patients: dict[str, int] | None = None  # split -> patients
    duplicates: Duplicates | None = None
    channels: int | None = None
    normalize: str | None = None


class Machine(Record):
    platform: str | None = None
    processor: str | None = None
    cpu_count: int | None = None
    torch_threads: int | None = None
    threads_from: str | None = None
    device: str | None = None
    gpu: str | None = None


class StudyInfo(Record):
    """study.json: the study as it was asked for and the facts of its data, machine and software."""

    format: int = 1
    name: str
    command: str = ""
    status: str = "running"  # running, finished, incomplete or submitted (--detach)
    started: str | None = None
    resumed: str | None = None
    finished: str | None = None
    synthetic_data: bool = False
    notes: list[str] = Field(default_factory=list)
    data_fingerprint: str | None = None
    data: DataFacts = Field(default_factory=DataFacts)
    weights: dict[str, str] = Field(default_factory=dict)  # starting weights file -> SHA-256
    trials: int | None = None
    seeds: list[int] = Field(default_factory=list)
    folds: int | None = None  # kfold: folds x repeats per seed
    runs: int | None = None
    run_list: list[RunListing] = Field(default_factory=list)
    versions: dict[str, str | None] = Field(default_factory=dict)
    study: dict[str, Plain]  # the study file, resolved (medablate.execute.plan.read_study validates it)
    machine: Machine = Field(default_factory=Machine)
    seconds_this_invocation: float | None = None
    workers: int | None = None
    executor: str | None = None
    timing_seconds: dict[str, float] | None = None  # setup, runs, figures, analysis, report


# ------------------------------------------------------------------ the other files


class FiguresRecord(Record):
    """figures.json: which metrics.json a run's figures and examples were drawn from."""

    metrics_sha1: str | None = None


class Example(Record):
    """One entry of examples.json: a test image shown with its saliency."""

    file: str
    image: str
    kind: str  # correct or wrong
    label: str
    decision: str
    probability: float
    saliency: str | None = None


class ClaimRecord(Record):
    """claim.lock's text: who holds the run (for people to read; the flock is the claim)."""

    host: str | None = None
    pid: int | None = None
    process_start: float | None = None
    claimed: str | None = None


HistoryRow = dict[str, float]  # one row of history.csv: every column a number (the columns: HISTORY_COLUMNS)
HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "val_balanced_acc",
                   "val_sensitivity", "val_specificity", "seconds")


class PredictionRows(NamedTuple):
    """predictions_<split>.csv as arrays: one row per image (columns image, label, prob_<class>..., decision,
    correct, and decision_at_threshold for two classes)."""

    ids: list[str]
    labels: np.ndarray  # (N,) class index
    probabilities: np.ndarray  # (N, classes)
    decisions: np.ndarray  # (N,) the loss's rule
