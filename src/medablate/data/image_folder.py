"""One sub-folder per class (the Kaggle layout NORMAL/, PNEUMONIA/), any format Pillow reads.

Images are converted to one grey channel and resized to image_size. Decoding uses every core.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medablate.data.types import ImageSet
from medablate.errors import UserError


def image_extensions() -> set[str]:
    return {ext.lower() for ext in Image.registered_extensions()}


def list_classes(folder: Path, classes: list[str] | None) -> list[str]:
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist: set data.path to a folder with one sub-folder "
                        "per class (e.g. NORMAL/ and PNEUMONIA/).")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        missing = [c for c in classes if c not in found]
        if missing:
            raise UserError(f"{folder} has no sub-folder for class(es) {missing}; it has {found}. "
                            "Fix data.classes or the folder names.")
        return list(classes)
    if len(found) < 2:
        raise UserError(f"{folder} has {len(found)} class sub-folder(s) ({found}); a classifier needs at least "
                        "two, one per class (e.g. NORMAL/ and PNEUMONIA/).")
    return found


def list_files(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    extensions = image_extensions()
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        members = sorted(p for p in (folder / name).iterdir()
                         if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions)
        if not members:
            raise UserError(f"class folder {folder / name} holds no images: add images (PNG, JPEG, ...) or "
                            "leave the class out with data.classes.")
        files += members
        labels += [index] * len(members)
    return files, np.asarray(labels, dtype=np.int64)


def decode(path: Path, size: int) -> np.ndarray:
    """One file to a (size, size) uint8 grey array; UserError naming the file when Pillow cannot read it."""
    try:
        with Image.open(path) as image:
            grey = image.convert("L")
            if grey.size != (size, size):
                grey = grey.resize((size, size), Image.Resampling.BILINEAR)
            return np.array(grey, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"image {path} could not be read ({exc}): replace or remove the file.") from None


def _decode_many(args: tuple[list[str], int]) -> np.ndarray:
    paths, size = args
    return np.stack([decode(Path(p), size) for p in paths]) if paths else np.empty((0, size, size), np.uint8)


def decode_all(files: list[Path], size: int, workers: int | None = None) -> np.ndarray:
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    if workers <= 1 or len(files) < 256:
        return _decode_many(([str(f) for f in files], size))
    chunk = max(64, len(files) // (workers * 4))
    jobs = [([str(f) for f in files[i:i + chunk]], size) for i in range(0, len(files), chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return np.concatenate(list(pool.map(_decode_many, jobs)))


def load(folder: Path, image_size: int, classes: list[str] | None = None) -> ImageSet:
    folder = Path(folder)
    class_names = list_classes(folder, classes)
    files, labels = list_files(folder, class_names)
    images = decode_all(files, image_size)
    ids = [str(f.relative_to(folder)) for f in files]
    return ImageSet(images, labels, ids, class_names, "image-folder")
