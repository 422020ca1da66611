"""Train/validation splits, fixed for a whole study and recorded in split.csv."""

from __future__ import annotations

import numpy as np

from medablate.config import SplitConfig
from medablate.data.types import ImageSet
from medablate.errors import UserError

TRAIN, VAL = "train", "val"


def make_split(data: ImageSet, config: SplitConfig) -> np.ndarray:
    """Return an array of 'train' / 'val', one per image."""
    if config.method == "course":
        return _course(data, config.train_per_class)
    return _stratified(data, config.val_fraction, config.seed)


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


def split_rows(data: ImageSet, split: np.ndarray) -> list[dict[str, object]]:
    return [{"image": i, "label": int(y), "class": data.class_names[int(y)], "split": s}
            for i, y, s in zip(data.ids, data.labels, split)]
