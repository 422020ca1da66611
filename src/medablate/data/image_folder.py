"""One sub-folder per class (the Kaggle layout NORMAL/, PNEUMONIA/), any format Pillow reads.

Images are converted to one grey channel and resized to image_size. Decoding uses every core.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medablate.data import cache, dicom
from typing import TYPE_CHECKING

from medablate.data.sources import DataSource, register_source
from medablate.data.types import ImageSet

if TYPE_CHECKING:
    from medablate.config import DataConfig, TestConfig
from medablate.errors import UserError


def image_extensions() -> set[str]:
    return {ext.lower() for ext in Image.registered_extensions()} | dicom.EXTENSIONS


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


INTENSITY = ("by bit depth: 8-bit as stored; 16-bit (and 32-bit integers within 0..65535) x 255/65535; "
             "other 32-bit integers and floats by the image's own min/max")
INTENSITY_VERSION = 2  # part of every decode-cache key: version 1 saturated 16-bit images to white


def grey_uint8(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit grey, scaled by its real bit depth (see INTENSITY): Pillow's convert("L") clips
    16-bit values at 255, which turns a 16-bit radiograph white."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image.convert("L")
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = values * (255 / 65535)
    else:
        scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def decode(path: Path, size: int, rgb: bool = False) -> np.ndarray:
    """One file to a (size, size) uint8 grey array, or with rgb a (3, size, size) one (grey files repeated);
    UserError naming the file when it cannot be read."""
    if dicom.is_dicom(path):
        pixels = dicom.decode(path, size)
        return np.repeat(pixels[None], 3, axis=0) if rgb else pixels
    try:
        with Image.open(path) as image:
            grey = image.convert("RGB") if rgb and image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") \
                else grey_uint8(image)
            if grey.size != (size, size):
                grey = grey.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.array(grey, dtype=np.uint8)
            if rgb:
                return pixels.transpose(2, 0, 1) if pixels.ndim == 3 else np.repeat(pixels[None], 3, axis=0)
            return pixels
    except Image.DecompressionBombError as exc:
        raise UserError(f"image {path} is refused: {exc} Pillow's limit guards against decompression bombs; if the "
                        "image is genuine, downsample it first (or raise PIL.Image.MAX_IMAGE_PIXELS in your own code).") \
            from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"image {path} could not be read ({exc}): replace or remove the file.") from None


def _decode_many(args: tuple[list[str], int, bool, bool]) -> tuple[np.ndarray, list[str | None]]:
    """Decode paths; with skip, an unreadable file gives a blank image and its error message instead of raising."""
    paths, size, skip, rgb = args
    images, errors = np.zeros((len(paths), *((3,) if rgb else ()), size, size), np.uint8), []
    for i, path in enumerate(paths):
        try:
            images[i] = decode(Path(path), size, rgb)
            errors.append(None)
        except UserError as exc:
            if not skip:
                raise
            errors.append(str(exc))
    return images, errors


def decode_with_errors(files: list[Path], size: int, workers: int | None = None,
                       skip: bool = False, rgb: bool = False) -> tuple[np.ndarray, list[str | None]]:
    """Every file decoded on all cores; per file None or (with skip) the message of why it could not be read."""
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    if workers <= 1 or len(files) < 256:
        return _decode_many(([str(f) for f in files], size, skip, rgb))
    chunk = max(64, len(files) // (workers * 4))
    jobs = [([str(f) for f in files[i:i + chunk]], size, skip, rgb) for i in range(0, len(files), chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_decode_many, jobs))
    return np.concatenate([p[0] for p in parts]), [e for p in parts for e in p[1]]


def decode_all(files: list[Path], size: int, workers: int | None = None) -> np.ndarray:
    return decode_with_errors(files, size, workers)[0]


SPLIT_FOLDERS = ("train", "val", "test")
SMALL_VALIDATION = 50


def split_layout(folder: Path) -> list[str]:
    """The split sub-folders (train/, val/, test/) of a Kaggle-style download, or [] for a plain class layout."""
    present = [s for s in SPLIT_FOLDERS if (Path(folder) / s).is_dir()]
    return present if "train" in present and len(present) > 1 else []


def load(folder: Path, image_size: int, classes: list[str] | None = None, use_cache: bool = True,
         skip_unreadable: bool = False, rgb: bool = False) -> ImageSet:
    """One class sub-folder per class; or train/, val/, test/ folders of those, used as the source's own split."""
    splits = split_layout(Path(folder))
    if not splits:
        return _load_classes(Path(folder), image_size, classes, use_cache, skip_unreadable, rgb)
    parts = []
    for split in splits:
        part = _load_classes(Path(folder) / split, image_size, classes or list_classes(Path(folder) / "train", None),
                             use_cache, skip_unreadable, rgb)
        part.ids = [f"{split}/{i}" for i in part.ids]
        parts.append((split, part))
    first = parts[0][1]
    data = ImageSet(np.concatenate([p.images for _, p in parts]), np.concatenate([p.labels for _, p in parts]),
                    [i for _, p in parts for i in p.ids], first.class_names, "image-folder",
                    preset=np.array([s for s, p in parts for _ in range(len(p))], dtype=object))
    val = dict(parts).get("val")
    if val is not None and (len(val) < SMALL_VALIDATION or min(val.counts().values()) < 5):
        data.notes.append(f"the val/ folder holds only {len(val)} images ({val.counts()}): too few to choose "
                          "checkpoints or thresholds on; set data.split.method: stratified to carve validation out "
                          "of train/ and val/ instead (test/ stays the test set).")
    return data


def _load_classes(folder: Path, image_size: int, classes: list[str] | None, use_cache: bool,
                  skip_unreadable: bool = False, rgb: bool = False) -> ImageSet:
    """Decode every image (all cores) or, when nothing changed since last time, read the decode-once cache."""
    class_names = list_classes(folder, classes)
    files, labels = list_files(folder, class_names)

    def build() -> ImageSet:
        images, errors = decode_with_errors(files, image_size, skip=skip_unreadable, rgb=rgb)
        ids = [str(f.relative_to(folder)) for f in files]
        source = "dicom" if files and all(dicom.is_dicom(f) for f in files) else "image-folder"
        patients = [dicom.patient_id(f) for f in files] if source == "dicom" else None
        data = ImageSet(images, labels, ids, class_names, source, patients=patients)
        skipped = [e for e in errors if e]
        if skipped:
            data = data.subset(np.array([e is None for e in errors]))
            data.notes.append(f"skipped {len(skipped)} unreadable image(s) (data.on_error: skip): "
                              + "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
        return data

    if not use_cache:
        return build()
    key = cache.source_key(folder, files, {"source": "image-folder", "size": image_size, "classes": class_names,
                                           "intensity": INTENSITY_VERSION,
                                           "resample": "bilinear", "grey": "L", "skip": skip_unreadable,
                                           **({"channels": 3} if rgb else {})})
    return cache.cached(key, build)


def _load(config: "DataConfig") -> ImageSet:
    if config.path is None:
        raise UserError(f"data.source is {config.source} but data.path is not set: set data.path to the data folder.")
    return load(config.path, config.image_size, config.classes, skip_unreadable=config.on_error == "skip",
                rgb=config.channels == 3)


def _load_test(data: "DataConfig", test: "TestConfig", class_names: list[str]) -> ImageSet:
    return load(test.path or _sibling_test_folder(data.path), data.image_size, class_names, rgb=data.channels == 3)


def _sibling_test_folder(train_path: Path | None) -> Path:
    if train_path is not None and train_path.name.lower() == "train" and (train_path.parent / "test").is_dir():
        return train_path.parent / "test"
    raise UserError(f"the study has a test: section but no test folder was found next to {train_path}: set "
                    "test.path to a folder with one sub-folder per class, or drop the test set with --set test=null.")


register_source(DataSource(
    "image-folder", "one sub-folder per class, any format Pillow reads; or `train/`, `val/`, `test/` folders of those "
    "(the Kaggle layout), used as the split", "file-name regex (`group_by: {regex: ...}`)",
    "converted to grey (or RGB with `data.channels: 3`), resized to `data.image_size`; a tiny `val/` gives a warning",
    _load, _load_test, detect=lambda path, files: path.is_dir() and any(p.is_dir() for p in path.iterdir())))
register_source(DataSource(
    "dicom", "class folders of `.dcm` files (pydicom)", "`PatientID` tag (`group_by: {dicom: PatientID}`)",
    "rescale slope/intercept, VOI LUT or window, MONOCHROME1 inverted, scaled to 8 bits; `image-folder` also reads "
    "`.dcm` files by suffix", _load, _load_test))
