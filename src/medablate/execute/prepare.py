"""A study's data and checks, made once by the driver and again by each worker process or Ray task.

`load_study_data` loads the data, splits it, removes duplicates across splits and checks the splits; the checks
build every model, optimizer and scheduler on a dummy input, so a bad config fails before anything trains.
`prepare_context` is a worker's view of a study the driver has prepared: the data on its device, printing nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from medablate.config.schema import SplitConfig, Study, flatten, to_plain
from medablate.data import load_data, load_test
from medablate.data.duplicates import find_duplicates, pixel_hashes
from medablate.data.split import (
    CV,
    KERMANY_PATIENTS,
    TEST,
    TRAIN,
    VAL,
    assign_folds,
    group_ids,
    looks_patient_named,
    make_split,
    uses_source_split,
)
from medablate.data.types import ImageSet
from medablate.errors import UserError
from medablate.execute.plan import Plan, Run
from medablate.folder.rundir import Fold
from medablate.models import network
from medablate.models.weights import load_weights
from medablate.train import shifts
from medablate.train.engine import (
    Split,
    build_trial_model,
    configure_threads,
    resolve_device,
)
from medablate.train.optim import build_optimizer, build_scheduler
from medablate.train.tasks import make_task
from medablate.train.tracking import require_tensorboard

DROPPED = "dropped-duplicate"


@dataclass(frozen=True)
class Picks:
    """Which images of a load the study uses: `images` of the training data, `test` of the training data (a part
    held out of it) or of the test set loaded on its own (`separate`); duplicates are already left out."""

    images: np.ndarray
    test: np.ndarray | None = None
    separate: bool = False


@dataclass
class StudyData:
    images: ImageSet
    split: np.ndarray  # train / val / dropped-duplicate, one per image
    test: ImageSet | None
    patients: list[str] | None = None
    duplicates: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    hashes: list[str] | None = None  # sha1 of each image's pixels, for split.csv
    test_from: str | None = None  # where the test set came from, in words
    test_patients: int | None = None  # patients in a test part held out from data.path
    folds: np.ndarray | None = None  # kfold: (repeats, images), the fold each image validates in (0: not in the pool)
    fold: Fold | None = None  # kfold: the fold this view of the data is split for
    picks: Picks | None = None  # which of the loaded images these are: another image size takes the same ones

    @property
    def notes(self) -> list[str]:
        notes = list(self.images.notes) + list(self.warnings)
        if self.test is not None and self.test.synthetic and not self.images.synthetic:
            notes += self.test.notes
        return list(dict.fromkeys(notes))

    @property
    def synthetic(self) -> bool:
        return self.images.synthetic or (self.test is not None and self.test.synthetic)

    @functools.cached_property
    def _fingerprint(self) -> str:
        parts = [self.images.fingerprint(), "|".join(self.split.tolist())]
        parts.append(self.test.fingerprint() if self.test is not None else "no-test")
        if self.folds is not None:
            parts.append(hashlib.sha256(np.ascontiguousarray(self.folds).data).hexdigest())
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def fingerprint(self) -> str:
        """sha256 over the pixels, labels, split (and folds) and test set (computed once: it hashes hundreds of
        MiB). A fold's data has its study's fingerprint."""
        return self._fingerprint

    @property
    def sides(self) -> tuple[str, ...]:
        return (CV,) if self.folds is not None else (TRAIN, VAL)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split (kfold: in the pool the folds are made of)."""
        counts = {s: {name: int(((self.split == s) & (self.images.labels == i)).sum())
                      for i, name in enumerate(self.images.class_names)} for s in self.sides}
        if self.test is not None:
            counts["test"] = self.test.counts()
        return counts

    def patient_counts(self) -> dict[str, int] | None:
        """Patients in each split, where the data knows them."""
        if self.patients is None:
            return None
        ids = np.asarray(self.patients, dtype=object)
        counts = {s: len(set(ids[self.split == s])) for s in self.sides}
        return counts | ({TEST: self.test_patients} if self.test_patients is not None else {})

    def for_fold(self, fold: Fold | None) -> StudyData:
        """kfold: this data as one fold sees it (that fold validates, the others train); itself otherwise."""
        if fold is None or fold == self.fold:
            return self
        assert self.folds is not None, "a fold's view of the data has no other folds"
        seen = dataclasses.replace(self, split=fold_split(self.split, self.folds, fold), folds=None, fold=fold)
        seen.__dict__["_fingerprint"] = self.fingerprint()
        return seen

    def split_used(self, config: SplitConfig) -> dict[str, Any]:
        """The split actually made: the source's own, or the method with its settings."""
        if self.images.preset is not None and uses_source_split(self.images, config):
            return {"method": "source", "from": self.images.source}
        return to_plain(config)


@dataclass
class RunContext:
    """What every run of a study shares: the study, its folder, the prepared data on the training device."""

    study: Study
    out: Path
    data: StudyData
    splits: dict[str, Split]
    device: torch.device
    fold: Fold | None = None
    size: int | None = None  # the image size of this view's data (None: the study's data.image_size)
    _fold_view: RunContext | None = None  # kfold: the last fold's view, shared by the runs of that fold
    _size_view: RunContext | None = None  # the last other image size's view, shared by the runs of that size

    def for_run(self, run: Run) -> RunContext:
        """The context a run trains in: its trial's image size, and its fold."""
        return self.at_size(run.trial.config.image_size).for_fold(run.fold)

    def at_size(self, size: int) -> RunContext:
        """The study's data at another image size on the device (a comparison of data.image_size); itself at its own."""
        if size == (self.size or self.study.data.image_size):
            return self
        if self._size_view is None or self._size_view.size != size:
            self._size_view = None  # the previous size's tensors go before the next are made
            data = data_at_size(self.data, self.study, size)
            self._size_view = RunContext(self.study, self.out, data, tensors(data, self.device), self.device,
                                         size=size)
        return self._size_view

    def for_fold(self, fold: Fold | None) -> RunContext:
        """The context a run of this fold trains in (kfold: its own train and validation images on the device)."""
        if fold is None or fold == self.fold:
            return self
        if self._fold_view is None or self._fold_view.fold != fold:
            self._fold_view = None  # the previous fold's tensors go before the next are made
            data = self.data.for_fold(fold)
            self._fold_view = RunContext(self.study, self.out, data, self.splits | train_and_val(data, self.device),
                                         self.device, fold, self.size)
        return self._fold_view


def check_models(plan: Plan, shape: tuple[int, int, int], num_classes: int) -> None:
    """Build each distinct model of the study for the data's (C, H, W) images on the CPU and run two images through
    it, so a network that does not fit the data (a segmentation net's dense output, an input too small for its
    downsampling) or an unreadable weights file fails before anything trains. A trial with its own
    data.image_size is checked at that size."""
    seen: set[str] = set()
    for trial in plan.trials:
        config = trial.config
        sized = (shape[0], config.image_size, config.image_size)
        key = json.dumps([to_plain(config.model), sized], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        outputs = make_task(config.training.loss, num_classes).num_outputs
        try:
            model = build_trial_model(config, sized, outputs).eval()
            if config.model.weights is not None:
                load_weights(network(model), config.model.weights)
            with torch.no_grad():
                logits = model(torch.rand(2, *sized))
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"trial '{trial.id}': model {config.model.name} cannot take {sized[0]}x{sized[1]}x{sized[2]} "
                            f"images ({type(exc).__name__}: {exc}). Choose another network or data.image_size.") from None
        if tuple(logits.shape) != (2, outputs):
            raise UserError(f"trial '{trial.id}': model {config.model.name} returns {tuple(logits.shape[1:])} per "
                            f"image, not {outputs} logit(s): it is not a classifier (a segmentation network?). "
                            "Choose a classification network.")


def check_weights_used(study: Study, plan: Plan) -> None:
    """model.weights that no trial starts from (each level of `vary: {model.name: [...]}` starts its model section
    afresh) would be accepted and ignored: refuse them, saying where the weights go instead."""
    if study.model.weights is not None and not any(t.config.model.weights is not None for t in plan.trials):
        raise UserError(f"model.weights is {study.model.weights}, but no trial starts from it: the comparisons vary "
                        "the model, and each level of model.name starts with that model's own defaults. Give the "
                        "weights with the level that uses them, e.g. vary: {model: [{name: cnn, weights: FILE}, "
                        "{name: mlp}]}, or remove model.weights.")


def check_buildable(plan: Plan) -> None:
    """Build every trial's optimizer and scheduler on a dummy parameter and take two steps, so bad arguments
    (wrong types too, which torch only notices when stepping: `T_max: abc`, `amsgrad: "x"`) fail before training."""
    for trial in plan.trials:
        training = trial.config.training
        if training.tensorboard:
            require_tensorboard()
        parameter = torch.nn.Parameter(torch.zeros(1))
        try:
            optimizer = build_optimizer(training.optimizer, [parameter])
            for _ in range(2):
                parameter.grad = torch.ones(1)
                optimizer.step()
        except Exception as exc:
            raise UserError(f"trial '{trial.id}': training.optimizer {to_plain(training.optimizer)} cannot be "
                            f"built: {exc}. Fix its arguments in the study file.") from None
        if training.scheduler is None:
            continue
        try:
            scheduler = build_scheduler(training.scheduler, optimizer, training.epochs, 1, training.monitor)
            for _ in range(2 if scheduler is not None else 0):
                optimizer.step()
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(1.0)  # it steps on the monitored metric
                else:
                    scheduler.step()  # type: ignore[union-attr]  # not None: the range is empty then
        except Exception as exc:
            raise UserError(f"trial '{trial.id}': training.scheduler {to_plain(training.scheduler)} cannot be "
                            f"built: {exc}. Fix its arguments in the study file.") from None


def load_study_data(study: Study, console: Console) -> StudyData:
    carved = study.data.split.test_fraction > 0
    if carved and study.test is not None:
        raise UserError(f"data.split.test_fraction is {study.data.split.test_fraction}, which holds out a test set from "
                        "data.path, and the study also has a test: section: keep one of them (--set test=null uses the "
                        "held-out part).")
    with console.status("Loading data..."):
        images = load_data(study.data)
        split = make_split(images, study.data.split)
        test, test_from, picks = None, None, Picks(np.ones(len(images), bool))
        if (split == TEST).any():  # held out by test_fraction, or the source's own test part (folders, manifest, MedMNIST)
            test = images.subset(split == TEST) if study.test is not None or carved else None
            test_from = (f"held out from data.path (data.split.test_fraction {study.data.split.test_fraction})"
                         if carved else "the source's own test part")
            picks = Picks(split != TEST, split == TEST if test is not None else None)
            images, split = images.subset(split != TEST), split[split != TEST]
        elif study.test is not None:
            test, test_from = load_test(study.data, study.test, images.class_names), "the study's test: section"
            picks = Picks(picks.images, np.ones(len(test), bool), separate=True)
    group_by = study.data.split.group_by
    patient_ids = group_ids(images, study.data.split) if group_by is not None else images.patients
    test_patients = None
    if test is not None and carved and patient_ids is not None:
        test_patients = len(set(group_ids(test, study.data.split) if group_by is not None else test.patients or []))
    found_warnings = []
    if group_by is None and looks_patient_named(images):
        found_warnings.append(
            "file names look like they carry patient ids, but the split is not grouped by patient, so one patient's "
            "images can land in train and validation; group it with data.split: {method: stratified, group_by: "
            f"{{regex: '{KERMANY_PATIENTS}'}}}} (that regex fits the Kermany chest X-ray names).")
    if test is None:
        found_warnings.append(
            "this study has no test set: every figure is measured on the validation split, which also chose the "
            "checkpoint (and threshold), so it overstates how the models do on new images; hold out a test set with "
            "data.split: {method: stratified, test_fraction: 0.15} (patient-grouped with group_by) or add a test: "
            "section.")
    hashes = pixel_hashes(images)
    duplicates = None
    if study.data.duplicates == "drop":
        found = find_duplicates(images, split, test, hashes)
        split = np.where(found.keep, split, DROPPED)
        if test is not None and found.test_keep is not None:
            test = test.subset(found.test_keep)
            assert picks.test is not None
            kept = picks.test.copy()
            kept[kept] = found.test_keep
            picks = dataclasses.replace(picks, test=kept)
        duplicates = found.as_dict()
    folds = _folds(images, split, patient_ids if group_by is not None else None, study.data.split)
    check_split_sizes(fold_split(split, folds, Fold(1, 1)) if folds is not None else split, test, duplicates)
    for rule in study.threshold_rules():
        if isinstance(rule, float):
            continue
        if len(images.class_names) != 2:
            raise UserError(f"evaluation.threshold is {rule!r}, but a chosen threshold applies to two-class tasks and "
                            f"the data has {len(images.class_names)} classes: use evaluation.threshold: 0.5.")
        if folds is None and len(np.unique(images.labels[split == VAL])) < 2:  # every fold has both classes
            raise UserError(f"evaluation.threshold is {rule!r}, which is chosen on validation, but the validation split "
                            "has only one class: change data.split or use evaluation.threshold: 0.5.")
    for shift in study.evaluation.shifts:
        if shift.only_class is not None:
            shifts.class_index(images.class_names, shift.only_class)
    if test is not None and test.image_shape != images.image_shape:
        raise UserError(f"test images are {test.image_shape} but training images are {images.image_shape}: "
                        "set data.image_size so both are resized alike.")
    return StudyData(images, split, test, patient_ids, duplicates, found_warnings, hashes,
                     test_from if test is not None else None, test_patients, folds, picks=picks)


def data_at_size(data: StudyData, study: Study, size: int) -> StudyData:
    """The study's data at another image size (a comparison of data.image_size): the same images, loaded again
    from the source at that size (the decode cache keeps each size), in the same split, with the same test images
    and the same duplicates left out, so the comparison is paired."""
    assert data.picks is not None, "only the data load_study_data made can be loaded at another size"
    config = study.data.model_copy(update={"image_size": size})
    loaded = load_data(config)
    picks = data.picks
    same = len(loaded) == len(picks.images) and np.array_equal(loaded.labels[picks.images], data.images.labels) \
        and [i for i, kept in zip(loaded.ids, picks.images, strict=True) if kept] == list(data.images.ids)
    if not same:
        raise UserError(f"the data at {config.path or config.source} loaded at data.image_size {size} is not the same "
                        f"images as at {study.data.image_size}: did the files change while the study ran? Run the "
                        "study again once they stay as they are.")
    test = None
    if data.test is not None and picks.test is not None:
        source = load_test(config, study.test, data.images.class_names) if picks.separate and study.test else loaded
        test = source.subset(picks.test)
    return dataclasses.replace(data, images=loaded.subset(picks.images), test=test)


def fold_split(split: np.ndarray, folds: np.ndarray, fold: Fold) -> np.ndarray:
    """kfold: train / val (and test, dropped) per image as one fold sees the pool."""
    seen = np.where(folds[fold.repeat - 1] == fold.fold, VAL, np.where(split == CV, TRAIN, split))
    return seen.astype(object)


def _folds(images: ImageSet, split: np.ndarray, groups: list[str] | None, config: SplitConfig) -> np.ndarray | None:
    """kfold: the folds of the pool's images (duplicates removed), as a (repeats, images) array; None otherwise."""
    pool = split == CV
    if not pool.any():
        return None
    folds = np.zeros((config.repeats, len(images)), dtype=np.int64)
    kept = [g for g, p in zip(groups, pool, strict=True) if p] if groups is not None else None
    folds[:, pool] = assign_folds(images.subset(pool), kept, config)
    return folds


def check_split_sizes(split: np.ndarray, test: ImageSet | None, duplicates: dict[str, Any] | None) -> None:
    """Every split has images left to train, validate and test on (after duplicate removal, which can take them
    all: a folder of identical images, or a test set copied from the training images)."""
    removed = sum((duplicates or {}).get("removed", {}).values())
    why = (f" after removing {removed} duplicate image(s) (identical pixels; data.duplicates: drop)" if removed else "")
    fix = ("Check the data (are the images really different? data.duplicates: keep keeps repeats, but a model "
           "cannot learn from identical images), or change data.split.")
    if int((split == TRAIN).sum()) < 2:
        raise UserError(f"the training split has {int((split == TRAIN).sum())} image(s){why}: at least 2 are needed. "
                        + fix)
    if not (split == VAL).any():
        raise UserError(f"the validation split is empty{why}: no epoch could be scored or checkpoint chosen. " + fix)
    if test is not None and len(test) == 0:
        raise UserError(f"the test set is empty{why}: every test image repeats a training or validation image. " + fix)


RUNTIME_KEYS = ("training.device", "training.eval_batch_size", "training.tensorboard", "training.checkpoint_every",
                "training.keep_checkpoints",
                "training.compile", "training.channels_last", "training.fuse_seeds", "resolved.device")
# how a value came to be, not what it is (the scheduler's step counts are compared as scaled)
BOOKKEEPING = ("training.scheduler.written_for_epochs", "training.scheduler.scaled_from")
IDENTITY_SECTIONS = ("model", "training", "augment", "normalize", "tta", "seed", "resolved")
# keys added after runs were first written: a run folder without them had their default
NEW_KEY_DEFAULTS = {"model.weights": None, "training.precision": "fp32", "normalize": "none", "tta": "none",
                    "augment.crop_scale": None, "augment.crop_ratio": [0.75, 1.3333], "augment.gamma": 0.0,
                    "augment.noise": 0.0, "augment.blur": 0.0, "training.label_smoothing": 0.0,
                    "training.early_stopping": None, "training.mixup": 0.0, "training.cutmix": 0.0,
                    "training.ema": None}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every identity key of a run that differs (runtime settings such as the device and the
    evaluation batch size are not part of a run's identity)."""
    before = flatten({k: old[k] for k in IDENTITY_SECTIONS if k in old})
    after = flatten({k: new[k] for k in IDENTITY_SECTIONS if k in new})
    keys = [k for k in dict.fromkeys([*before, *after]) if k not in RUNTIME_KEYS and not k.startswith(BOOKKEEPING)]
    default = lambda k, side: side.get(k, NEW_KEY_DEFAULTS.get(k, "(unset)"))  # noqa: E731
    return [f"{k}: {default(k, before)} -> {default(k, after)}" for k in keys if default(k, before) != default(k, after)]


def changed_config_message(out: Path, changed: dict[str, list[str]]) -> str:
    runs = "; ".join(f"{run}: {', '.join(diffs)}" for run, diffs in list(changed.items())[:4])
    more = f" (and {len(changed) - 4} more runs)" if len(changed) > 4 else ""
    epochs = any(d.startswith("training.epochs:") for diffs in changed.values() for d in diffs)
    hint = (" A longer or shorter schedule is a different trial (the scheduler's horizon, the best epoch and every "
            "outcome change), so finished runs cannot be extended: to compare the two, add a comparison "
            "`vary: {training.epochs: [old, new]}`; to train only the new one, use a new --out.") if epochs else ""
    return (f"{out} holds runs trained with a different configuration than the study now asks for, and a study never "
            f"mixes configurations: {runs}{more}.{hint} Put the study back as it was, use another --out folder, or "
            "delete those run folders to retrain them.")


def data_note(data: StudyData) -> str:
    """How results.csv and the figures name the data: its source, or that it is synthetic."""
    return "synthetic phantom" if data.synthetic else data.images.source


def tensors(data: StudyData, device: torch.device) -> dict[str, Split]:
    """The train, validation (and test) images on the training device (kfold: the test images; each fold's train
    and validation images are put there by RunContext.for_fold)."""
    splits = train_and_val(data, device) if data.folds is None else {}
    if data.test is not None:
        splits["test"] = Split.from_numpy(data.test.images, data.test.labels, device)
    return splits


def train_and_val(data: StudyData, device: torch.device) -> dict[str, Split]:
    train, val = data.split == TRAIN, data.split == VAL
    return {"train": Split.from_numpy(data.images.images[train], data.images.labels[train], device),
            "val": Split.from_numpy(data.images.images[val], data.images.labels[val], device)}


def prepare_context(study: Study, out: Path, threads: int | None) -> RunContext:
    """A worker's or Ray task's view of a study the driver has prepared: the data (the decode cache makes it quick)
    on this process's device, printing nothing."""
    data = load_study_data(study, Console(quiet=True))
    configure_threads(threads)
    device = resolve_device(study.training.device)
    return RunContext(study, Path(out), data, tensors(data, device), device)
