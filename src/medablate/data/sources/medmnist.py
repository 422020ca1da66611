"""A MedMNIST .npz (train_images, train_labels, val_..., test_...), any published size, with its official splits."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medablate.data.arrays import check_uint8_images, resize_uint8
from medablate.data.sources import DataSource, register_source
from medablate.data.types import ImageSet

if TYPE_CHECKING:
    from medablate.config.schema import DataConfig, TestConfig
from medablate.errors import UserError

SPLITS = ("train", "val", "test")


def _grey(images: np.ndarray, rgb: bool = False) -> np.ndarray:
    """RGB MedMNIST sets (N, H, W, 3) to one grey channel (ITU-R 601 luma, as Pillow's convert('L')), or with rgb
    to (N, 3, H, W)."""
    if images.ndim == 4 and images.shape[-1] == 3:
        if rgb:
            return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        weights = np.array([299, 587, 114], dtype=np.uint32)
        return ((images.astype(np.uint32) * weights).sum(-1) // 1000).astype(np.uint8)
    return images


def check_labels(labels: np.ndarray, count: int, where: str) -> np.ndarray:
    """Integer class indices 0..K-1, one per image; a UserError naming the array otherwise."""
    if len(labels) != count:
        raise UserError(f"{where} has {len(labels)} labels for {count} images: give exactly one label per image.")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise UserError(f"{where} has dtype {labels.dtype}: labels must be integer class indices 0, 1, ...")
    if np.issubdtype(labels.dtype, np.floating) and not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
        raise UserError(f"{where} holds non-integer labels (e.g. {labels[labels != np.round(labels)][:3].tolist()}): "
                        "labels must be class indices 0, 1, ...; they would be truncated silently otherwise.")
    if len(labels) and labels.min() < 0:
        raise UserError(f"{where} holds negative labels (smallest {labels.min():g}): labels must be class indices "
                        "0, 1, ... (-1 often marks 'unlabelled': drop those images).")
    return labels.astype(np.int64)


def load(path: Path, image_size: int, classes: list[str] | None = None, rgb: bool = False) -> ImageSet:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"MedMNIST file {path} does not exist. Download it where the network allows, e.g. "
            f"`pip install medmnist` then `python -c \"import medmnist; medmnist.PneumoniaMNIST(split='train', "
            f"download=True, size=28, root='{path.parent}')\"` (the file is named like pneumoniamnist.npz or "
            "pneumoniamnist_224.npz), and set data.path to it.")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UserError(f"{path} could not be read as a .npz archive ({exc}).") from None
    images, labels, preset = [], [], []
    for split in SPLITS:
        for key in (f"{split}_images", f"{split}_labels"):
            if key not in archive.files:
                raise UserError(f"{path} has no array '{key}' (it has {sorted(archive.files)}): a MedMNIST file holds "
                                "train_, val_ and test_ images and labels.")
        split_labels = archive[f"{split}_labels"]
        if split_labels.ndim == 2 and split_labels.shape[1] > 1:
            raise UserError(f"{path} is multi-label ({split_labels.shape[1]} labels per image, like ChestMNIST): "
                            "medablate handles one label per image.")
        raw = archive[f"{split}_images"]
        grey = check_uint8_images(_grey(raw), f"{path}[{split}_images]")
        if rgb and raw.ndim == 4:
            grey = _grey(raw, rgb=True)
        images.append(resize_uint8(grey, image_size))
        labels.append(check_labels(split_labels.reshape(-1), len(grey), f"{path}[{split}_labels]"))
        preset += [split] * len(grey)
    all_labels = np.concatenate(labels)
    count = int(all_labels.max()) + 1
    names = list(classes) if classes else [str(i) for i in range(count)]
    if len(names) < count:
        raise UserError(f"{path} has labels up to {count - 1} but data.classes names {len(names)} classes.")
    ids = [f"{split}[{i}]" for split, part in zip(SPLITS, labels, strict=False) for i in range(len(part))]
    return ImageSet(np.concatenate(images), all_labels, ids, names, "medmnist", preset=np.array(preset, dtype=object))


def _load(config: DataConfig) -> ImageSet:
    if config.path is None:
        raise UserError("data.source is medmnist but data.path is not set: set data.path to the .npz file.")
    return load(config.path, config.image_size, config.classes, rgb=config.channels == 3)


def _load_test(data: DataConfig, test: TestConfig, class_names: list[str]) -> ImageSet:
    if test.path is None:
        raise UserError("the medmnist source holds no test split of its own here: its test_ arrays are used as the "
                        "split's test set; set test.path for another file, or drop the test set with --set test=null.")
    return load(test.path, data.image_size, class_names, rgb=data.channels == 3)


register_source(DataSource(
    "medmnist", "a MedMNIST `.npz` (`train_images`, `train_labels`, `val_...`, `test_...`), any size", "no",
    "its official splits; RGB sets are converted to grey unless `data.channels: 3`", _load, _load_test,
    detect=lambda path, files: path.is_file() and path.suffix.lower() == ".npz", rank=40))
