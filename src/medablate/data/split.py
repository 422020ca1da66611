"""Train/validation splits, fixed for a whole study and recorded in split.csv."""

from __future__ import annotations

import itertools
import re

import numpy as np

from medablate.config.schema import SplitConfig
from medablate.data.types import ImageSet
from medablate.errors import UserError

TRAIN, VAL = "train", "val"


PATIENT_LIKE = re.compile(r"(person\d+_|patient[-_]?\d+|IM-\d{4}-)", re.IGNORECASE)
KERMANY_PATIENTS = r"(person\d+)_|((?:NORMAL2-)?IM-\d+)-"


TEST = "test"
CV = "cv"  # kfold: the images the folds are made of (each validates in one fold per repeat)


def uses_source_split(data: ImageSet, config: SplitConfig) -> bool:
    """The source's own split, when asked for, or when the source comes split and no method was chosen."""
    if config.method == "source":
        if data.preset is None:
            raise UserError(f"data.split.method is source, but the {data.source} data has no split of its own "
                            "(folders train/val/test, a manifest split column, or a MedMNIST file have one): "
                            "use course or stratified.")
        return True
    return data.preset is not None and "method" not in config.model_fields_set


def make_split(data: ImageSet, config: SplitConfig) -> np.ndarray:
    """Return an array of 'train' / 'val' (and 'test' for a source's own test part), one per image."""
    if uses_source_split(data, config):
        return np.asarray(data.preset, dtype=object).copy()
    if data.preset is not None and (data.preset == TEST).any():
        if config.test_fraction > 0:
            raise UserError(f"data.split.test_fraction is {config.test_fraction}, but the {data.source} data comes with "
                            "a test part of its own: set data.split.test_fraction: 0 to use it (or remove it).")
        # A method was chosen for a source that comes split: carve validation out of train and val, keep its test.
        split = np.full(len(data), TEST, dtype=object)
        pool = data.preset != TEST
        split[pool] = make_split(data.subset(pool), config)
        return split
    if config.method == "course":
        return _course(data, config.train_per_class)
    groups = group_ids(data, config) if config.group_by is not None else None
    if config.method == "kfold":  # the folds are drawn later, from the images left after duplicates are removed
        split = np.full(len(data), CV, dtype=object)
        if config.test_fraction > 0:
            split[_hold_out(data, groups, config.test_fraction, config.seed) == VAL] = TEST
        return split
    if config.test_fraction == 0:
        return _hold_out(data, groups, config.val_fraction, config.seed)
    # Test first, then validation from the rest; both fractions are of all images, both patient-grouped.
    test = _hold_out(data, groups, config.test_fraction, config.seed) == VAL
    split = np.full(len(data), TEST, dtype=object)
    rest_groups = [g for g, t in zip(groups, test, strict=False) if not t] if groups is not None else None
    split[~test] = _hold_out(data.subset(~test), rest_groups, config.val_fraction / (1 - config.test_fraction),
                             config.seed)
    return split


def _hold_out(data: ImageSet, groups: list[str] | None, fraction: float, seed: int) -> np.ndarray:
    """'train' / 'val' per image: a stratified share held out, patient-grouped when groups are given."""
    if groups is not None:
        return _stratified_groups(data, groups, fraction, seed)
    return _stratified(data, fraction, seed)


def group_ids(data: ImageSet, config: SplitConfig) -> list[str]:
    """The patient of every image, from the regex on file names or from the source (a manifest column)."""
    assert config.group_by is not None
    if config.group_by.regex is not None:
        return patients(data, config.group_by.regex)
    if data.patients is None:
        asked = f"column {config.group_by.column}" if config.group_by.column else f"dicom {config.group_by.dicom}"
        raise UserError(f"data.split.group_by is {asked}, but the {data.source} data has no patient ids: use a manifest "
                        "with a patient_id column, DICOM files, or group_by: {regex: '...'} on file names.")
    return list(data.patients)


def patients(data: ImageSet, regex: str) -> list[str]:
    """The patient of each image: the first non-empty capture group of regex in its file name."""
    pattern = re.compile(regex)
    found = []
    for image in data.ids:
        match = pattern.search(image.rsplit("/", 1)[-1])
        group = next((g for g in match.groups() if g), None) if match else None
        if group is None:
            raise UserError(f"data.split.group_by.regex {regex!r} finds no patient id in '{image}': fix the regex "
                            f"(for the Kermany chest X-rays: '{KERMANY_PATIENTS}') or rename the file.")
        found.append(group)
    return found


def looks_patient_named(data: ImageSet) -> bool:
    return any(PATIENT_LIKE.search(i) for i in data.ids[:5000])


def _stratified_groups(data: ImageSet, groups: list[str], val_fraction: float, seed: int) -> np.ndarray:
    """Stratified by class, every patient's images on one side (scikit-learn's StratifiedGroupKFold, first fold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = max(2, int(round(1 / val_fraction)))
    if len(set(groups)) < folds:
        raise UserError(f"only {len(set(groups))} patients: too few to hold out about {val_fraction:.0%} of them; "
                        "add data or drop data.split.group_by.")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    _, val_index = next(splitter.split(np.zeros(len(data)), data.labels, groups))
    split = np.full(len(data), TRAIN, dtype=object)
    split[val_index] = VAL
    for index, name in enumerate(data.class_names):
        if not ((split == VAL) & (data.labels == index)).any() or not ((split == TRAIN) & (data.labels == index)).any():
            raise UserError(f"the patient-grouped split leaves class '{name}' empty on one side: add images or "
                            "change data.split.val_fraction.")
    return split


def assign_folds(data: ImageSet, groups: list[str] | None, config: SplitConfig) -> np.ndarray:
    """kfold: the fold (1..folds) in which each image validates, one row per repeat; stratified by class, patient-
    grouped when groups are given (scikit-learn's StratifiedGroupKFold), reshuffled with seed + repeat."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    folds = np.zeros((config.repeats, len(data)), dtype=np.int64)
    if groups is not None and len(set(groups)) < config.folds:
        raise UserError(f"only {len(set(groups))} patients for data.split.folds {config.folds}: every fold needs "
                        "patients of its own; lower folds, add data or drop data.split.group_by.")
    smallest = min(np.bincount(data.labels, minlength=len(data.class_names)))
    if smallest < config.folds:
        raise UserError(f"a class has {smallest} images, fewer than data.split.folds {config.folds}: every fold needs "
                        "each class; lower folds or add images.")
    for repeat in range(config.repeats):
        seed = config.seed + repeat
        splitter = StratifiedGroupKFold(config.folds, shuffle=True, random_state=seed) if groups is not None \
            else StratifiedKFold(config.folds, shuffle=True, random_state=seed)
        for fold, (_, val_index) in enumerate(splitter.split(np.zeros(len(data)), data.labels, groups), start=1):
            folds[repeat, val_index] = fold
    for repeat, fold in itertools.product(range(config.repeats), range(1, config.folds + 1)):
        for index, name in enumerate(data.class_names):
            member = data.labels == index
            if not (member & (folds[repeat] == fold)).any() or not (member & (folds[repeat] != fold)).any():
                raise UserError(f"repeat {repeat + 1}, fold {fold} of the k-fold split leaves class '{name}' empty on "
                                "one side (patients are kept together): lower data.split.folds or add images.")
    return folds


def _course(data: ImageSet, train_per_class: int) -> np.ndarray:
    """The first train_per_class images of each class train, the rest validate (as the course did)."""
    split = np.full(len(data), VAL, dtype=object)
    for index, name in enumerate(data.class_names):
        members = np.flatnonzero(data.labels == index)
        if len(members) <= train_per_class:
            raise UserError(
                f"data.split.train_per_class is {train_per_class}, but class '{name}' has only {len(members)} "
                f"images, leaving none for validation: lower train_per_class below {len(members)} or use "
                "split.method: stratified.")
        split[members[:train_per_class]] = TRAIN
    return split


def _stratified(data: ImageSet, val_fraction: float, seed: int) -> np.ndarray:
    """Random split, the same fraction of every class held out (at least one image each side)."""
    rng = np.random.default_rng(seed)
    split = np.full(len(data), TRAIN, dtype=object)
    for index, name in enumerate(data.class_names):
        members = np.flatnonzero(data.labels == index)
        n_val = int(round(len(members) * val_fraction))
        if len(members) < 2 or not 0 < n_val < len(members):
            raise UserError(
                f"class '{name}' has {len(members)} images: too few to hold out {val_fraction:.0%} for validation "
                "and keep some for training; add images or change data.split.val_fraction.")
        split[rng.permutation(members)[:n_val]] = VAL
    return split


SPLIT_COLUMNS = ["file", "label", "class", "patient", "split", "pixels_sha1"]


def split_rows(data: ImageSet, split: np.ndarray, patient: list[str] | None = None, hashes: list[str] | None = None,
               folds: np.ndarray | None = None) -> tuple[list[dict[str, object]], list[str]]:
    """split.csv's rows and columns; the pixel hash lets `evaluate` tell when its images are the study's own. kfold
    adds a column per repeat: the fold in which the image validates (empty outside the pool)."""
    patient = patient or [""] * len(data)
    hashes = hashes or [""] * len(data)
    rows: list[dict[str, object]] = [
        {"file": i, "label": int(y), "class": data.class_names[int(y)], "patient": p, "split": s, "pixels_sha1": h}
        for i, y, p, s, h in zip(data.ids, data.labels, patient, split, hashes, strict=False)]
    fold_columns = [f"fold_rep{r}" for r in range(1, len(folds) + 1)] if folds is not None else []
    for column, row in zip(fold_columns, folds if folds is not None else [], strict=True):
        for entry, fold in zip(rows, row, strict=True):
            entry[column] = int(fold) or ""
    return rows, SPLIT_COLUMNS + fold_columns
