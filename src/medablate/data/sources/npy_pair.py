"""The course's format: one (N, H, W) uint8 .npy array per class (normal.npy = 0, pneumonia.npy = 1)."""

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

DEFAULT_FILES = ["normal.npy", "pneumonia.npy"]


def load(folder: Path, files: list[str], image_size: int, class_names: list[str] | None = None) -> ImageSet:
    folder = Path(folder)
    if len(files) < 2:
        raise UserError(f"npy-pair needs one file per class and at least two classes; got files {files}. "
                        "Set data.files, e.g. [normal.npy, pneumonia.npy].")
    names = class_names or [Path(f).stem.removeprefix("test_") for f in files]
    if len(names) != len(files):
        raise UserError(f"data.classes names {len(names)} classes but data.files names {len(files)} files: "
                        "give one class name per file.")
    arrays = [_read(folder / f) for f in files]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        listing = ", ".join(f"{f}: {a.shape[1]}x{a.shape[2]}" for f, a in zip(files, arrays, strict=False))
        raise UserError(f"the arrays in {folder} have different image sizes ({listing}): resize them to one size "
                        "before saving, or set data.image_size and save each at that size.")
    images = np.concatenate([resize_uint8(a, image_size) for a in arrays])
    labels = np.concatenate([np.full(len(a), i, dtype=np.int64) for i, a in enumerate(arrays)])
    ids = [f"{f}[{j}]" for f, a in zip(files, arrays, strict=False) for j in range(len(a))]
    notes = [] if shapes == {(image_size, image_size)} else [
        f"images resized from {next(iter(shapes))} to {image_size}x{image_size}"]
    return ImageSet(images, labels, ids, names, "npy-pair", notes=notes)


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        near = sorted(p.name for p in path.parent.glob("*.npy")) if path.parent.is_dir() else []
        hint = f"; .npy files there: {', '.join(near)} (set data.files)" if near else ""
        raise UserError(f"{path} does not exist{hint}. Point data.path at the folder with the course's "
                        f".npy files, or set data.files to their names.")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")  # read on demand: resized in batches below
    except Exception as exc:  # numpy raises several types for a corrupt or pickled file
        raise UserError(f"{path} could not be read as a .npy array ({exc}): re-save it with np.save.") from None
    return check_uint8_images(array, str(path))


def _load(config: DataConfig) -> ImageSet:
    return load(_path(config.path), config.files or DEFAULT_FILES, config.image_size, config.classes)


def _load_test(data: DataConfig, test: TestConfig, class_names: list[str]) -> ImageSet:
    files = test.files or [f"test_{f}" for f in data.files or DEFAULT_FILES]
    return load(_path(test.path or data.path), files, data.image_size, class_names)


def _path(path: Path | None) -> Path:
    if path is None:
        raise UserError("data.source is npy-pair but data.path is not set: set data.path to the data folder.")
    return path


register_source(DataSource(
    "npy-pair", "one `(N, H, W)` uint8 `.npy` per class (`normal.npy` = 0, `pneumonia.npy` = 1; `data.files`)", "no",
    "the test set is `test_normal.npy`, `test_pneumonia.npy` beside them", _load, _load_test,
    detect=lambda path, files: path.is_dir() and all((path / f).is_file() for f in files), rank=10))
