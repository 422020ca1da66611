"""The study file as typed, frozen data: schema, YAML loading, dotted --set overrides, validation.

Nothing downstream sees YAML or CLI objects. Every validation error names its dotted path
(e.g. `training.scheduler.name`) and, for names, the closest valid one.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from medablate.config.base import ModelBase, Named, Strict, as_named
from medablate.config.files import require_study_file
from medablate.core import names
from medablate.core.registry import MODELS, SOURCES
from medablate.core.yamlfile import load_yaml
from medablate.errors import UserError
from medablate.folder import layout

LOSSES = ("BCEWithLogitsLoss", "CrossEntropyLoss")
Normalize = Literal["none", "image", "dataset"]
TTA = Literal["none", "flip", "crops"]


# Whole numbers are strict: `epochs: true` is no 1, `epochs: 2.5` no 2. A seed is what numpy and torch both take.
Seed = Annotated[StrictInt, Field(ge=0, le=2**32 - 1)]


class PhantomConfig(Strict):
    count_per_class: StrictInt = Field(1000, ge=2)
    seed: StrictInt = 0


class TestPhantomConfig(Strict):
    count_per_class: StrictInt = Field(200, ge=1)
    seed: StrictInt | None = Field(None, description="default: data.phantom.seed + 1, so test images are new")


class GroupBy(Strict):
    """Which images belong to one patient: a regex on the file name (its first non-empty capture group),
    or a column of the manifest (`{column: patient_id}`)."""

    regex: str | None = None
    column: str | None = None
    dicom: Literal["PatientID"] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> GroupBy:
        if sum(v is not None for v in (self.regex, self.column, self.dicom)) != 1:
            raise ValueError("group_by takes exactly one of regex: '...', column: patient_id or dicom: PatientID")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:

        if value is None:
            return value
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"regex {value!r} does not compile: {exc}") from None
        if pattern.groups < 1:
            raise ValueError(f"regex {value!r} has no capture group: put the patient id in (...)")
        return value


class SplitConfig(Strict):
    method: Literal["course", "stratified", "kfold", "source"] = Field(
        "course", description="course, stratified, kfold (cross-validation: every run trains on all folds but one), "
                              "or source (the data's own split: folders, manifest, MedMNIST); a source that comes "
                              "split is used as split unless method is set")
    train_per_class: StrictInt = Field(800, ge=1, description="course: the first N images of each class train")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="stratified: fraction held out for validation")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="stratified or kfold: fraction held out as the test "
                                                              "set (patient-grouped like validation); 0: none")
    folds: StrictInt = Field(5, ge=2, le=50, description="kfold: folds per repeat; each fold validates once")
    repeats: StrictInt = Field(1, ge=1, le=20, description="kfold: repetitions of the k-fold split, each reshuffled")
    seed: StrictInt = 0
    group_by: GroupBy | None = Field(None, description="stratified or kfold: keep each patient's images on one side")

    @model_validator(mode="after")
    def _grouping_needs_stratified(self) -> SplitConfig:
        if self.group_by is not None and self.method not in ("stratified", "kfold"):
            raise ValueError("group_by needs method: stratified or kfold (the course split takes the first images of "
                             "each class and cannot keep patients together)")
        if self.test_fraction > 0 and self.method not in ("stratified", "kfold"):
            raise ValueError("test_fraction needs method: stratified or kfold (it holds out a random, stratified "
                             "share)")
        if self.method == "kfold" and self.test_fraction >= 0.5:
            raise ValueError(f"test_fraction {self.test_fraction} leaves less than half of the images to the folds: "
                             "keep it below 0.5")
        if self.method != "kfold" and self.test_fraction + self.val_fraction >= 0.9:
            raise ValueError(f"val_fraction {self.val_fraction} + test_fraction {self.test_fraction} leave too little "
                             "to train on: keep their sum below 0.9")
        return self


class AugmentConfig(Strict):
    """Random training-time transforms (see medablate.train.augment); all zero/off by default."""

    rotate: float = Field(0.0, ge=0, le=180, description="max rotation, degrees either way")
    translate: float = Field(0.0, ge=0, le=0.5, description="max shift, as a fraction of the image size")
    scale: float = Field(0.0, ge=0, lt=1, description="max zoom in or out, as a fraction")
    contrast: float = Field(0.0, ge=0, lt=1, description="max contrast change, as a fraction")
    brightness: float = Field(0.0, ge=0, le=1, description="max brightness shift, in units of the 0..1 range")
    flip: bool = Field(False, description="flip half of the images left-right (think twice: anatomy is not symmetric)")
    crop_scale: tuple[float, float] | None = Field(
        None, description="random resized crop: the crop's area as a fraction of the image, e.g. [0.7, 1.0]; "
                          "None: off")
    crop_ratio: tuple[float, float] = Field((0.75, 1.3333), description="random resized crop: aspect ratio range")
    gamma: float = Field(0.0, ge=0, lt=1, description="max gamma change: gamma drawn in [1 - g, 1 + g]")
    noise: float = Field(0.0, ge=0, le=0.5, description="Gaussian noise: max standard deviation, in units of 0..1")
    blur: float = Field(0.0, ge=0, le=10, description="Gaussian blur: max sigma in pixels (at 128 px; scaled with size)")

    @field_validator("crop_scale", "crop_ratio")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] <= value[1]:
            raise ValueError(f"a range is [low, high] with 0 < low <= high, not {list(value)}")
        return value

    @field_validator("crop_scale")
    @classmethod
    def _area(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[1] > 1:
            raise ValueError(f"crop_scale is a fraction of the image's area: at most 1, not {list(value)}")
        return value

    @property
    def enabled(self) -> bool:
        return self.flip or self.crop_scale is not None or any(
            v > 0 for v in (self.rotate, self.translate, self.scale, self.contrast, self.brightness, self.gamma,
                            self.noise, self.blur))


def _known_source(value: str) -> str:
    valid = ["auto", *SOURCES.names()]  # the catalogue: each source module registers itself
    if value not in valid:
        raise ValueError(names.unknown_name_message("data source", value, valid))
    return value


ImageSize = Annotated[StrictInt, Field(ge=8, le=2048, description="images are resized to this many pixels a side")]


class DataConfig(Strict):
    source: str = Field("auto", description="auto (detected from data.path) or a source of medablate.data.sources")
    path: Path | None = None
    image_size: ImageSize = 256
    channels: Literal[1, 3] = Field(1, description="1: grey (RGB sources converted); 3: RGB kept (grey repeated)")
    normalize: Normalize = Field("none", description="none: pixels in 0..1; image: each image to mean 0, SD 1; "
                                                     "dataset: the training split's mean and SD")
    classes: list[str] | None = None
    files: list[str] | None = None
    phantom: PhantomConfig = PhantomConfig()
    split: SplitConfig = SplitConfig()
    augment: AugmentConfig = AugmentConfig()
    on_error: Literal["fail", "skip"] = Field("fail", description="an unreadable image fails the load, or is skipped and counted")
    duplicates: Literal["drop", "keep"] = Field(
        "drop", description="drop: an image whose pixels repeat one in an earlier split (train < val < test) is removed")

    _source = field_validator("source")(lambda value: _known_source(value))


class TestConfig(Strict):
    """Where the test set lives. Unset fields follow the training data (see data.resolve_test)."""

    source: str = "auto"
    path: Path | None = None
    files: list[str] | None = None
    phantom: TestPhantomConfig = TestPhantomConfig()

    _source = field_validator("source")(lambda value: _known_source(value))


# every model's config class, from the models that registered themselves (one file each in medablate.models)
MODELS_BY_NAME: dict[str, Any] = MODELS.entries()
MODEL_CONFIGS: dict[str, type[ModelBase]] = {alias: entry.config for entry in MODELS_BY_NAME.values()
                                             for alias in (entry.name, *entry.aliases)}
_TAG = {alias: entry.name for entry in MODELS_BY_NAME.values() for alias in (entry.name, *entry.aliases)}
DEFAULT_MODEL: Any = MODEL_CONFIGS["mlp"]  # the course's model


def _model_tag(value: Any) -> str | None:
    """Which config class a model section is: its name (default mlp, the course's model)."""
    name = value.get("name", "mlp") if isinstance(value, dict) else getattr(value, "name", None)
    return _TAG.get(name, name)


if TYPE_CHECKING:  # to a type checker, any model's config: what every reader may use of it
    ModelConfig = ModelBase
else:  # the registered models' config classes, told apart by name (Union of a tuple: no `|` spelling for it)
    ModelConfig = Annotated[Union[tuple(Annotated[entry.config, Tag(entry.name)]  # noqa: UP007
                                        for entry in MODELS_BY_NAME.values())],
                            Discriminator(_model_tag, custom_error_type="unknown_model",
                                          custom_error_message="unknown model name")]


class OptimizerConfig(Named):
    @model_validator(mode="after")
    def _known(self) -> OptimizerConfig:
        table = names.optimizers()
        if self.name not in table:
            raise ValueError(names.unknown_name_message("optimizer", self.name, table))
        names.check_kwargs("optimizer", table[self.name], self.kwargs, reserved=("params",))
        return self


# A scheduler's arguments that count steps (epochs, or optimizer steps with interval: step) in absolute numbers:
# written for one run length, they would silently mean another schedule in a shorter or longer run (a StepLR with
# step_size 10 never steps in a 5-epoch run). Written in a study file, they follow the run length: scaled from the
# epochs the file states (written_for_epochs) to the run's epochs, and the scaling is recorded in config.yaml.
STEP_COUNTS: dict[str, tuple[str, ...]] = {
    "StepLR": ("step_size",), "MultiStepLR": ("milestones",), "CosineAnnealingLR": ("T_max",),
    "PolynomialLR": ("total_iters",), "LinearLR": ("total_iters",), "ConstantLR": ("total_iters",),
    "OneCycleLR": ("total_steps",), "CosineAnnealingWarmRestarts": ("T_0",),
    "CyclicLR": ("step_size_up", "step_size_down"),
}


def _scaled_count(value: Any, factor: float) -> Any:
    if isinstance(value, list):
        return sorted({max(1, round(v * factor)) for v in value})
    return max(1, round(value * factor)) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def follow_run_length(scheduler: Any, epochs: Any) -> Any:
    """A scheduler section whose step counts were written for `written_for_epochs`, scaled to `epochs` (a plain
    mapping in, a plain mapping out; anything else unchanged). Idempotent: afterwards written_for_epochs = epochs."""
    if isinstance(scheduler, BaseModel):
        scheduler = scheduler.model_dump()
    if not isinstance(scheduler, dict) or not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        return scheduler
    written = scheduler.get("written_for_epochs")
    if not isinstance(written, int) or isinstance(written, bool) or written < 1 or written == epochs:
        return scheduler
    keys = [k for k in STEP_COUNTS.get(str(scheduler.get("name")), ()) if k in scheduler]
    scaled = dict(scheduler, written_for_epochs=epochs)
    original = dict(scheduler.get("scaled_from") or {"epochs": written, **{k: scheduler[k] for k in keys}})
    for key in keys:
        scaled[key] = _scaled_count(scheduler[key], epochs / written)
    scaled["scaled_from"] = original
    return scaled


def stamp_run_length(raw: dict[str, Any]) -> None:
    """Mark every scheduler section of a study file that gives absolute step counts with the epochs the file
    states (default 40), so that --set training.epochs=N or a varied epochs scales them (see follow_run_length)."""
    training = raw.get("training")
    training = training if isinstance(training, dict) else {}
    epochs = training.get("epochs", TrainingConfig.model_fields["epochs"].default)
    sections = [training.get("scheduler")]
    for comparison in raw.get("comparisons") or []:
        vary = comparison.get("vary") if isinstance(comparison, dict) else None
        if isinstance(vary, dict) and isinstance(vary.get("training.scheduler"), list):
            sections += vary["training.scheduler"]
    for section in sections:
        if isinstance(section, dict) and "written_for_epochs" not in section and \
                any(k in section for k in STEP_COUNTS.get(str(section.get("name")), ())):
            section["written_for_epochs"] = epochs


def never_steps(scheduler: Any, epochs: int) -> str | None:
    """Why a per-epoch schedule would not do within `epochs` what its arguments say (None when it does): a StepLR
    or MultiStepLR that never changes the rate, a warm-up or cycle longer than the run."""
    if scheduler is None or scheduler.interval != "epoch" or scheduler.scaled_from or epochs <= 1:
        # per step, the run's length in steps is known only with the data; counts scaled from the file's run length
        # keep its proportions; a one-epoch run has one learning rate whatever the schedule
        return None
    kwargs, name = scheduler.kwargs, scheduler.name
    fix = (f"The run has {epochs} epochs; lower it, or give written_for_epochs: N (the run length the value was "
           "written for) and medablate scales it to the run's epochs.")
    if name == "StepLR" and isinstance(kwargs.get("step_size"), int) and kwargs["step_size"] >= epochs:
        return (f"training.scheduler.step_size is {kwargs['step_size']}: StepLR would keep the learning rate at its "
                f"start value in every one of the {epochs} epochs (it first changes after epoch "
                f"{kwargs['step_size']}). {fix}")
    late = [m for m in kwargs.get("milestones") or [] if isinstance(m, int) and m >= epochs] \
        if name == "MultiStepLR" and isinstance(kwargs.get("milestones"), list) else []
    if late:
        return (f"training.scheduler.milestones has {late}: a milestone at or after the last epoch ({epochs}) never "
                f"changes the learning rate of this run. {fix}")
    for key in ("total_iters",) if name in ("LinearLR", "ConstantLR") else ():
        if isinstance(kwargs.get(key), int) and kwargs[key] > epochs:
            return (f"training.scheduler.{key} is {kwargs[key]}: {name}'s warm-up would still be running when the "
                    f"run ends. {fix}")
    if name == "OneCycleLR" and isinstance(kwargs.get("total_steps"), int) and kwargs["total_steps"] < epochs:
        return (f"training.scheduler.total_steps is {kwargs['total_steps']}: OneCycleLR cannot step {epochs} times "
                f"(torch stops the run with an error). {fix}")
    return None


PLATEAU = "ReduceLROnPlateau"


class SchedulerConfig(Named):
    interval: Literal["epoch", "step"] = "epoch"
    written_for_epochs: StrictInt | None = Field(
        None, ge=1, description="the run length (epochs) this section's step counts (step_size, milestones, "
                                "total_iters, ...) were written for; they are scaled to the run's epochs. A study "
                                "file's schedulers get its training.epochs")
    scaled_from: dict[str, Any] | None = Field(None, description="set by medablate: the counts before scaling")

    @model_validator(mode="after")
    def _known(self) -> SchedulerConfig:
        table = names.schedulers()
        if self.name not in table:
            raise ValueError(names.unknown_name_message("scheduler", self.name, table))
        names.check_kwargs("scheduler", table[self.name], self.kwargs, reserved=("optimizer",))
        missing = names.missing_required(self.name, self.kwargs)
        if missing:
            raise ValueError(f"scheduler {self.name} needs {', '.join(missing)} (e.g. "
                             f"{{name: {self.name}, {missing[0]}: ...}})")
        if self.name == PLATEAU and self.interval != "epoch":
            raise ValueError("ReduceLROnPlateau steps once per epoch, on training.monitor after validation: leave out "
                             "interval: step")
        return self


Monitor = Literal["val_loss", "val_acc", "val_auc", "val_balanced_acc", "val_sensitivity", "val_specificity"]


class EarlyStopping(Strict):
    """End a run once `patience` epochs in a row bring no improvement of `monitor` beyond `min_delta`."""

    monitor: Monitor | None = Field(None, description="default: training.monitor")
    patience: StrictInt = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)


class EmaConfig(Strict):
    """Weight EMA: an exponential moving average of the weights (and BatchNorm statistics), updated after every
    optimizer step; it is what validation scores and what the run keeps as its model."""

    decay: float = Field(0.999, gt=0, lt=1, description="the average's weight on its past per step, after a warm-up: "
                         "the n-th update uses min(decay, (1 + n) / (10 + n))")


class TrainingConfig(Strict):
    epochs: StrictInt = Field(40, ge=1)
    batch_size: StrictInt = Field(32, ge=1)
    loss: str = "BCEWithLogitsLoss"
    optimizer: OptimizerConfig = OptimizerConfig(name="Adam", lr=1e-3)
    scheduler: SchedulerConfig | None = SchedulerConfig(name="CosineAnnealingLR")
    monitor: Monitor = Field(
        "val_loss", description=f"the validation metric ({layout.HISTORY_CSV}'s column) that picks {layout.BEST_PT}: "
                                "the loss lowest, any other highest")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: StrictInt = Field(256, ge=1)
    tensorboard: bool = Field(False, description="write TensorBoard scalars and HParams per trial (optional package)")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast precision of the training and evaluation passes (fp16 with a GradScaler)")
    compile: bool = Field(False, description="torch.compile the model (checkpoints keep the raw module's keys)")
    fuse_seeds: Literal["auto", "on", "off"] = Field(
        "auto", description="train a trial's seeds together as one fused model (torch.func.vmap), each seed with its "
                            "own randomness, optimizer, checkpoints and run folder: auto where it pays (networks "
                            "without convolutions, on a GPU), on wherever the model allows, off: one after another. "
                            "A runtime setting: a seed's numbers agree with its unfused run to float rounding")
    channels_last: Literal["auto", "on", "off"] = Field("auto", description="auto: on for convolutional networks")
    checkpoint_every: Literal["auto", "epoch"] | StrictInt = Field(
        "auto", description=f"{layout.LAST_PT} after an epoch: auto (when 60 s have passed since the last one), epoch, "
                            "or every N epochs; always at the end. A resume replays the epochs since, with identical "
                            "numbers")

    keep_checkpoints: Literal["best", "last", "all"] = Field(
        "best", description=f"what a finished run keeps: best ({layout.BEST_PT}; {layout.LAST_PT} keeps only the "
                            f"history), last (also the final epoch's weights in {layout.LAST_PT}) or all (also the "
                            f"optimizer state). While a run trains, {layout.LAST_PT} always holds everything a resume "
                            "needs")

    @field_validator("fuse_seeds", "channels_last", mode="before")
    @classmethod
    def _yaml_switch(cls, value: Any) -> Any:
        """YAML reads a bare on / off as true / false: take them as the words."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("checkpoint_every")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ValueError(f"checkpoint_every must be auto, epoch or a number of epochs >= 1, not {value}")
        return value
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight the training loss by inverse class frequency of the training split")
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle", description="balanced: draw each epoch's batches with equal weight per class (with replacement)")
    early_stopping: EarlyStopping | None = Field(None, description=f"end a run early ({layout.BEST_PT} stays the "
                                                                   "best epoch)")
    ema: EmaConfig | None = Field(None, description="weight EMA ({decay: 0.999}): validated, checkpointed and used as "
                                                     "the run's model")
    mixup: float = Field(0.0, ge=0, description="mixup's Beta(a, a) concentration (e.g. 0.2): each batch blends "
                                                 "image pairs and their losses; 0: off")
    cutmix: float = Field(0.0, ge=0, description="cutmix's Beta(a, a) concentration (e.g. 1.0): each batch pastes a "
                                                  "box of another image; with mixup, one of the two per batch")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="e: the training loss aims at 1 - e + e/k for the "
                                                                "true class and e/k for each other (k classes; "
                                                                "validation and test score the true labels)")

    _named = field_validator("optimizer", "scheduler", mode="before")(as_named)

    @model_validator(mode="before")
    @classmethod
    def _schedule_follows_run_length(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("scheduler") is not None:
            scheduler = as_named(data["scheduler"])
            data = dict(data, scheduler=follow_run_length(scheduler, data.get("epochs", 40)))
        return data

    @model_validator(mode="after")
    def _schedule_changes_within_the_run(self) -> TrainingConfig:
        problem = never_steps(self.scheduler, self.epochs)
        if problem:
            raise ValueError(problem)
        mode = self.scheduler.kwargs.get("mode") if self.scheduler is not None and self.scheduler.name == PLATEAU else None
        wanted = "min" if self.monitor.endswith("loss") else "max"
        if mode is not None and mode != wanted:
            raise ValueError(f"training.scheduler.mode is {mode}, but ReduceLROnPlateau follows training.monitor "
                             f"({self.monitor}), which is better {'lower' if wanted == 'min' else 'higher'}: leave mode "
                             "out (it is set from the monitor)")
        return self

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        if value not in LOSSES:
            raise ValueError(names.unknown_name_message("loss", value, LOSSES))
        return value


class AnalysisConfig(Strict):
    """How a study's comparisons are judged (see medablate.analysis.stats for the reasoning)."""

    test: Literal["t", "wilcoxon"] = "t"
    alpha: float = Field(0.05, gt=0, lt=1)
    convergence_fraction: float = Field(0.95, gt=0, le=1, description="converged: val acc >= this x the run's best")
    stability_epochs: StrictInt = Field(10, ge=2, description="stability: SD of val acc over the last N epochs")
    bootstrap_resamples: StrictInt = Field(2000, ge=100)
    primary: str | None = Field(None, description="the outcome each comparison answers (test_acc when there is a "
                                                  "test set, else val_acc); a comparison's own primary: wins")
    family: Literal["primary", "all"] = Field(
        "primary", description="primary: Holm over the study's primary tests only, every other outcome exploratory; "
                               "all: Holm over every test of the study")

    _known_primary = field_validator("primary")(lambda value: _known_outcome(value))


PRIMARY_OUTCOMES = ("test_acc", "test_loss", "test_auc", "test_decision_acc", "test_sensitivity", "test_specificity",
                    "robust_acc", "robust_auc", "val_acc", "val_loss_at_best", "best_epoch", "convergence_epoch",
                    "stability")


def _known_outcome(value: str | None) -> str | None:
    if value is not None and value not in PRIMARY_OUTCOMES:
        raise ValueError(names.unknown_name_message("primary outcome", value, PRIMARY_OUTCOMES))
    return value


class Reference(Strict):
    """A published result to show beside the study's trials (results table and ROC figure)."""

    name: str = Field(min_length=1)
    metrics: dict[Literal["accuracy", "auc", "sensitivity", "specificity"], float]
    test_set: str = Field(min_length=1, description="the test set the numbers were measured on")
    citation: str = ""

    @field_validator("metrics")
    @classmethod
    def _in_unit_range(cls, metrics: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in metrics.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"reference metrics are fractions between 0 and 1, not {bad}")
        return metrics


class SensitivityTarget(Strict):
    sensitivity: float = Field(gt=0, le=1)


class SpecificityTarget(Strict):
    specificity: float = Field(gt=0, le=1)


class PrevalenceTarget(Strict):
    prevalence: float = Field(gt=0, lt=1, description="the share of positives where the model will be used")


SHIFT_NAMES = ("brightness", "contrast", "gamma", "blur", "noise", "resolution", "jpeg", "zoom", "rotation")
ShiftName = Literal["brightness", "contrast", "gamma", "blur", "noise", "resolution", "jpeg", "zoom", "rotation"]
SEVERITIES = [1, 2, 3, 4, 5]


class ShiftConfig(Strict):
    """One perturbation of the robustness panel (medablate.train.shifts), scored at each severity (0: clean)."""

    name: ShiftName

    @field_validator("name", mode="before")
    @classmethod
    def _known_shift(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in SHIFT_NAMES:
            raise ValueError(names.unknown_name_message("shift", value, SHIFT_NAMES))
        return value

    severities: list[Annotated[StrictInt, Field(ge=0, le=5)]] = Field(
        default_factory=lambda: list(SEVERITIES), min_length=1, description="from 0 (unchanged) to 5")
    only_class: str | None = Field(None, description="shift the images of this class alone (a class from another "
                                                     "scanner: the shortcut a model may learn); default every image")

    @field_validator("severities")
    @classmethod
    def _sorted_once(cls, value: list[int]) -> list[int]:
        return sorted(set(value))

    @property
    def label(self) -> str:
        return self.name if self.only_class is None else f"{self.name} ({self.only_class} only)"


def _panel(value: Any) -> Any:
    """'standard' (alone or in the list): every shift at severities 1-5; a bare name: that shift at 1-5."""
    if isinstance(value, str) and value != "standard":
        raise ValueError(f"evaluation.shifts '{value}' is neither 'standard' nor a list of shifts; the shifts are: "
                         f"{', '.join(SHIFT_NAMES)}")
    if not isinstance(value, (list, str)):
        return value
    items: list[Any] = []
    for item in [value] if isinstance(value, str) else value:
        items += SHIFT_NAMES if item == "standard" else [item]
    return [{"name": item} if isinstance(item, str) else item for item in items]


Threshold = float | Literal["youden"] | SensitivityTarget | SpecificityTarget | PrevalenceTarget


THRESHOLD_TARGETS = ("sensitivity", "specificity", "prevalence")


def threshold_form(value: Any) -> Any:
    """evaluation.threshold in one of its five forms, else a ValueError naming them."""
    forms = "a number between 0 and 1, youden, {sensitivity: 0.95}, {specificity: 0.9} or {prevalence: 0.6}"
    if isinstance(value, dict):
        (key, target), *more = list(value.items()) or [(None, None)]
        if more or key not in THRESHOLD_TARGETS:
            close = names.closest(str(key), list(THRESHOLD_TARGETS)) if not more else None
            hint = f" (did you mean '{close}'?)" if close else ""
            raise ValueError(f"threshold {value} is not one of: {forms}{hint}")
        ceiling = 1 if key != "prevalence" else 1 - 1e-12
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= ceiling:
            raise ValueError(f"the threshold's {key} is a fraction above 0 and {'at most' if ceiling == 1 else 'below'}"
                             f" 1 (e.g. {{{key}: 0.9}}), not {target}")
    if isinstance(value, str) and value != "youden":
        hint = " (did you mean 'youden'?)" if names.closest(value, ["youden"]) else ""
        raise ValueError(f"threshold '{value}' is not one of: {forms}{hint}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 < value < 1:
        raise ValueError(f"a fixed threshold must be between 0 and 1, not {value}")
    return value


def plain_rule(threshold: Threshold) -> Any:
    """A threshold rule as the study gave it: 0.5, 'youden' or {sensitivity: 0.95}."""
    return threshold.model_dump() if isinstance(threshold, BaseModel) else threshold


class EvaluationConfig(Strict):
    """How decisions are made from probabilities (binary tasks; class 1 is positive)."""

    threshold: Threshold = Field(
        0.5, description="0.5 (the course's rule), youden, {sensitivity: 0.95}, {specificity: 0.9} or "
                         "{prevalence: 0.6} (the highest expected accuracy where that share of images is positive); "
                         "chosen on validation only")
    shifts: list[ShiftConfig] = Field(
        default_factory=list, description="the robustness panel: standard (every shift at severities 1-5), or a list "
                                          "of shift names or {name, severities, only_class}; scored on the test split "
                                          "(validation where there is none) at the run's threshold")
    bootstrap_resamples: StrictInt = Field(2000, ge=100, description="resamples for the test metrics' 95% CIs")
    tta: TTA = Field("none", description="test-time augmentation: none, flip (image and its mirror) or crops (the "
                                         "image and four 90% corner crops); probabilities averaged, on validation "
                                         "and test alike")

    _threshold = field_validator("threshold", mode="before")(lambda value: threshold_form(value))

    _standard = field_validator("shifts", mode="before")(lambda value: _panel(value))

    @field_validator("shifts")
    @classmethod
    def _distinct(cls, shifts: list[ShiftConfig]) -> list[ShiftConfig]:
        labels = [s.label for s in shifts]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"evaluation.shifts names {', '.join(twice)} more than once: give each shift (and class) "
                             "once, with all its severities")
        return shifts

    @property
    def rule(self) -> Any:
        return plain_rule(self.threshold)


class TrialConfig(Strict):
    """Everything one training run depends on, except the seed and the study-level data."""

    model: ModelConfig = DEFAULT_MODEL()
    training: TrainingConfig = TrainingConfig()
    augment: AugmentConfig = AugmentConfig()  # the study's data.augment, which comparisons can vary
    normalize: Normalize = "none"  # the study's data.normalize
    tta: TTA = "none"  # the study's evaluation.tta
    threshold: Threshold = 0.5  # the study's evaluation.threshold
    image_size: ImageSize = 256  # the study's data.image_size

    _threshold = field_validator("threshold", mode="before")(lambda value: threshold_form(value))

    @property
    def rule(self) -> Any:
        return plain_rule(self.threshold)


VARIABLE = ("model.", "training.", "data.augment", "data.normalize", "data.image_size", "evaluation.tta",
            "evaluation.threshold")


class Comparison(Strict):
    name: str = Field(min_length=1)
    vary: dict[str, list[Any]]
    reference: Any = None
    primary: str | None = Field(None, description="the outcome this comparison answers; default analysis.primary")

    _known_primary = field_validator("primary")(lambda value: _known_outcome(value))

    @field_validator("vary")
    @classmethod
    def _vary_keys(cls, vary: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not vary:
            raise ValueError("vary is empty: name at least one key, e.g. {training.loss: [BCEWithLogitsLoss, CrossEntropyLoss]}")
        for key, values in vary.items():
            if key != "model" and not key.startswith(VARIABLE):
                raise ValueError(
                    f"cannot vary '{key}': only model, model.*, training.*, data.augment, data.normalize, "
                    "data.image_size, evaluation.tta and evaluation.threshold can vary within a study "
                    "(the data and its split are shared by every trial so that comparisons are paired)")
            if not values:
                raise ValueError(f"vary.{key} is an empty list: give at least one value")
        return vary


class MlflowConfig(Strict):
    """Where a study's runs are tracked in MLflow (a runtime setting: no run's identity depends on it)."""

    uri: str | None = Field(None, description="the tracking URI: file:PATH, sqlite:///PATH, http(s)://HOST; "
                                              "default: file: DIR/mlruns beside the study's outputs")
    experiment: str | None = Field(None, description="the MLflow experiment; default: the study's name")


class TrackingConfig(Strict):
    mlflow: MlflowConfig | None = Field(None, description="log every run to MLflow (pip install mlflow-skinny)")


def slurm_minutes(value: Any) -> Any:
    """`time: 90`, `"90"`, `"1:30:00"` or `"2-00:00:00"` (Slurm's forms) -> minutes."""
    if isinstance(value, str) and re.fullmatch(r"\s*(\d+-)?\d+(:\d{1,2}){0,2}\s*", value):
        days, _, clock = value.strip().rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
        return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if isinstance(value, str):
        raise ValueError(f"{value!r} is no time limit: give minutes (90) or Slurm's forms H:MM:SS (1:30:00) and "
                         "D-HH:MM:SS (2-00:00:00)")
    return value


class SlurmConfig(Strict):
    """How `--executor slurm` submits a study's runs (a runtime setting: no run's identity depends on it)."""

    partition: str | None = Field(None, description="the partition (queue); default: the cluster's default")
    time: Annotated[StrictInt, Field(ge=1)] = Field(
        60, description="each array task's time limit in minutes (or H:MM:SS, D-HH:MM:SS); a task that reaches it is "
                        "requeued and resumes from its last checkpoint")
    gpus: Annotated[StrictInt, Field(ge=0)] | None = Field(None, description="GPUs per task; default: 1 when "
                                                                              "training.device may use a GPU, else 0")
    cpus: Annotated[StrictInt, Field(ge=1)] = Field(1, description="CPUs per task (its torch threads)")
    mem_gb: float | None = Field(None, gt=0, description="memory per task in GB; default: the partition's")
    parallelism: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="at most this many tasks of the array at once (%N); default: as many as the cluster gives")
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = Field(default_factory=list, description="shell lines each task runs first, e.g. module load "
                                                                "cuda, or activating this environment")
    additional: dict[str, str] = Field(default_factory=dict, description="any other sbatch option, e.g. "
                                                                           "{reservation: course}")
    requeues: Annotated[StrictInt, Field(ge=0)] = Field(
        3, description="how often a task that timed out is requeued before it counts as failed")

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return slurm_minutes(value)


class RuntimeConfig(Strict):
    """Where and how the runs execute; nothing here changes a number."""

    slurm: SlurmConfig = SlurmConfig()


class Study(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    data: DataConfig = DataConfig()
    test: TestConfig | None = None
    model: ModelConfig = DEFAULT_MODEL()
    training: TrainingConfig = TrainingConfig()
    comparisons: list[Comparison] = Field(default_factory=list)
    analysis: AnalysisConfig = AnalysisConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    references: list[Reference] = Field(default_factory=list)
    tracking: TrackingConfig = TrackingConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    test_set_name: str | None = Field(None, description="what the test set is (e.g. the official 624-image split), "
                                                        "so references on the same set are recognised as such")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat a value: {seeds}")
        return seeds

    @model_validator(mode="after")
    def _unique_comparisons(self) -> Study:
        seen = [c.name for c in self.comparisons]
        dupes = {n for n in seen if seen.count(n) > 1}
        if dupes:
            raise ValueError(f"comparison names must be unique: {sorted(dupes)} repeat")
        files: dict[str, list[str]] = {}
        for name in seen:
            files.setdefault(names.safe_name(name), []).append(name)
        clash = next((spelled for spelled in files.values() if len(spelled) > 1), None)
        if clash:
            raise ValueError(f"comparison names {clash} give the same file name "
                             f"'figures/{names.safe_name(clash[0])}.png' (letters, digits, '.', '_' and '-' are kept, "
                             "anything else becomes '_'), so their figures would overwrite each other: rename one")
        return self

    @property
    def base(self) -> TrialConfig:
        return TrialConfig(model=self.model, training=self.training, augment=self.data.augment,
                           normalize=self.data.normalize, tta=self.evaluation.tta, threshold=self.evaluation.threshold,
                           image_size=self.data.image_size)

    def threshold_rules(self) -> list[Any]:
        """Every threshold rule the study's trials use: evaluation.threshold and the levels comparisons give it."""
        varied = [v for c in self.comparisons for v in c.vary.get("evaluation.threshold", [])]
        rules = [self.evaluation.rule, *(float(v) if isinstance(v, (int, float)) else v for v in varied)]
        return [rule for i, rule in enumerate(rules) if rule not in rules[:i]]

    def evaluation_of(self, trial: TrialConfig) -> EvaluationConfig:
        """The evaluation section one trial's runs are scored with: the study's, with the trial's test-time
        augmentation and threshold rule (comparisons can vary both)."""
        return self.evaluation.model_copy(update={"tta": trial.tta, "threshold": trial.threshold})


# ---------------------------------------------------------------- loading and overrides


def parse_override(text: str) -> tuple[str, Any]:
    """`training.epochs=5` -> ("training.epochs", 5); the value is read as YAML."""
    if "=" not in text:
        raise UserError(f"--set '{text}' is not of the form key=value, e.g. --set training.epochs=5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set '{text}' has no key before '=': write e.g. --set training.epochs=5")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UserError(f"--set {key}: the value '{raw}' is not valid YAML ({exc.problem}); quote it") from None
    return key, value


def set_dotted(tree: dict[str, Any], key: str, value: Any, defaults: dict[str, Any] | None = None) -> None:
    """Set tree[a][b][c] = value for key 'a.b.c', creating mappings on the way. A section missing on the way
    starts as its default from `defaults` (so `training.optimizer.lr=1e-4` keeps the default optimizer's name)."""
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        defaults = defaults.get(part) if isinstance(defaults, dict) else None
        child = node.get(part)
        if child is None:
            child = node[part] = copy.deepcopy(defaults) if isinstance(defaults, dict) else {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise UserError(f"cannot set '{key}': '{where}' is a value ({child!r}), not a section")
        node = child
    node[parts[-1]] = value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def get_dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
        shown = ".".join(p for i, p in enumerate(parts) if not _is_model_tag(parts, i))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = _unknown_key_message(parts)
        elif err["type"] == "unknown_model":
            name = err["input"].get("name") if isinstance(err["input"], dict) else err["input"]
            msg = names.unknown_name_message("model", str(name), MODEL_CONFIGS)
            shown += ".name"
        elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{shown or '(top level)'}: {msg}")
    text = "; ".join(lines)
    return f"{source} is not a valid study: {text}" + ("" if text.endswith((".", "?")) else ".")


def _is_model_tag(parts: list[str], i: int) -> bool:
    """pydantic puts the union member's tag in the location (model.cnn.widths): not a key the user wrote."""
    return i > 0 and parts[i - 1] == "model" and parts[i] in MODELS_BY_NAME


def _unknown_key_message(parts: list[str]) -> str:
    *parent, key = parts
    model: type[BaseModel] | None = Study
    for i, part in enumerate(parent):
        if _is_model_tag(parent, i):
            model = MODEL_CONFIGS[part]
            continue
        field = model.model_fields.get(part) if model else None
        annotation = field.annotation if field else None
        model = next((a for a in getattr(annotation, "__args__", (annotation,))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
    valid = list(model.model_fields) if model else []
    if model is not None and issubclass(model, ModelBase) and key not in valid:
        owners = sorted({c.model_fields["name"].default for c in MODEL_CONFIGS.values()
                         if c is not model and key in c.model_fields})
        if owners:
            current = model.model_fields["name"].default
            return (f"unknown key '{key}' for model {current}: '{key}' belongs to model {' and '.join(owners)} "
                    f"(set model.name: {owners[0]} to use it), the keys of {current} are: {', '.join(valid)}")
    suggestion = names.closest(key, valid)
    hint = f"did you mean '{suggestion}'?" if suggestion else f"valid keys here: {', '.join(valid)}"
    return f"unknown key '{key}': {hint}"


def validate_study(raw: dict[str, Any], source: str) -> Study:
    try:
        return Study.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    path = require_study_file(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"study file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position "
                        f"{exc.start}): save it as UTF-8 (any text editor can), or check that it is the study's YAML "
                        "file and not another file.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"study file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"study file {path} must be a mapping with at least 'name:' and 'comparisons:'")
    return raw


def load_study(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Study, dict[str, Any]]:
    """Read, override and validate a study. Returns the study and the raw (overridden) mapping."""
    raw = copy.deepcopy(read_yaml(path))
    stamp_run_length(raw)  # before --set: the file's step counts were written for the file's epochs
    defaults = Study(name="defaults").model_dump(mode="json")
    defaults.pop("model")  # a model section starts empty: the defaults of one model are unknown keys of another
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(raw, key, value, defaults)
    source = f"study file {path}" + (f" (with --set {', '.join(overrides)})" if overrides else "")
    study = validate_study(raw, source)
    return _resolve_paths(study, Path(path).parent), raw


def _resolve_paths(study: Study, folder: Path) -> Study:
    def fix(p: Path | None) -> Path | None:
        """Absolute path: as given, else relative to the working directory, else to the study file."""
        if p is None:
            return None
        p = p.expanduser()
        if not p.is_absolute() and not p.exists() and (folder / p).exists():
            p = folder / p
        return p.absolute()

    data = study.data.model_copy(update={"path": fix(study.data.path)})
    test = study.test.model_copy(update={"path": fix(study.test.path)}) if study.test else None
    model = study.model.model_copy(update={"weights": fix(study.model.weights)})
    return study.model_copy(update={"data": data, "test": test, "model": model})


def to_plain(model: BaseModel) -> dict[str, Any]:
    """JSON/YAML-ready dict of a config (paths as strings, extras kept)."""
    return model.model_dump(mode="json")
