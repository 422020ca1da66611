"""One sub-folder per class (the Kaggle layout NORMAL/, PNEUMONIA/), any format Pillow reads.

Images are converted to one grey channel and resized to image_size. Decoding uses every core.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from medablate.core.children import process_pool
from medablate.data import cache, dicom
from medablate.data.sources import DataSource, register_source
from medablate.data.types import ImageSet

if TYPE_CHECKING:
    from medablate.config.schema import DataConfig, TestConfig
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


def grey_uint8(image: Image.Image, path: Path | None = None) -> Image.Image:
    """Any Pillow image as 8-bit grey, scaled by its real bit depth (see INTENSITY): Pillow's convert("L") clips
    16-bit values at 255, which turns a 16-bit radiograph white. Float pixels that are NaN or infinite (a float
    TIFF) are refused: no scaling can make an image of them."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image.convert("L")
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise UserError(f"image {path or 'in the data'} has {bad} of {values.size} pixels that are NaN or infinite: "
                        "fix or remove the file (or data.on_error: skip to leave it out).")
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = values * (255 / 65535)
    else:
        scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


COLOUR_MODES = ("RGB", "RGBA", "P", "CMYK", "YCbCr")


def decode(path: Path, size: int, rgb: bool = False, seen: list[tuple[str, int, int]] | None = None) -> np.ndarray:
    """One file to a (size, size) uint8 grey array, or with rgb a (3, size, size) one (grey files repeated);
    UserError naming the file when it cannot be read. `seen` gets the file's (mode, width, height)."""
    if dicom.is_dicom(path):
        pixels = dicom.decode(path, size)
        return np.repeat(pixels[None], 3, axis=0) if rgb else pixels
    try:
        with Image.open(path) as image:
            if seen is not None:
                seen.append((_mode(image), *image.size))
            grey = image.convert("RGB") if rgb and image.mode in COLOUR_MODES \
                else grey_uint8(image, path)
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


Seen = tuple[str, int, int]  # a decoded file's mode, width and height
GREY_RGB = "RGB, grey values"  # an RGB file whose three channels are equal (re-encoded grey X-rays)


def _mode(image: Image.Image) -> str:
    if image.mode == "RGB":
        pixels = np.asarray(image)
        if (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all():
            return GREY_RGB
    return str(image.mode)


def _decode_many(args: tuple[list[str], int, bool, bool]) -> tuple[np.ndarray, list[str | None], list[Seen]]:
    """Decode paths; with skip, an unreadable file gives a blank image and its error message instead of raising."""
    paths, size, skip, rgb = args
    images = np.zeros((len(paths), *((3,) if rgb else ()), size, size), np.uint8)
    errors: list[str | None] = []
    seen: list[Seen] = []
    for i, path in enumerate(paths):
        try:
            images[i] = decode(Path(path), size, rgb, seen)
            errors.append(None)
        except UserError as exc:
            if not skip:
                raise
            errors.append(str(exc))
    return images, errors, seen


SQUARE_ENOUGH = (0.8, 1.25)  # aspect ratios (width / height) within 4:5 and 5:4 are called square here


def inputs_note(seen: list[Seen], size: int, rgb: bool) -> str | None:
    """Once per data set, what decoding did to the files: colour converted (or grey repeated), sizes resized, and
    how far from square they were (they are squashed to a square, never cropped or padded)."""
    if not seen:
        return None
    parts = []
    colour = sum(mode in COLOUR_MODES for mode, _, _ in seen)
    grey_rgb = sum(mode == GREY_RGB for mode, _, _ in seen)
    if rgb and colour + grey_rgb < len(seen):
        parts.append(f"{len(seen) - colour - grey_rgb} grey image(s) repeated to 3 channels")
    elif not rgb and colour:
        parts.append(f"{colour} colour image(s) converted to grey (ITU-R 601 luma)")
    if not rgb and grey_rgb:
        parts.append(f"{grey_rgb} stored as RGB with three equal channels, read as one grey channel")
    sizes = {(w, h) for _, w, h in seen}
    resized = sum((w, h) != (size, size) for _, w, h in seen)
    if resized:
        widths, heights = [w for _, w, _ in seen], [h for _, _, h in seen]
        spread = (f" (from {min(widths)}x{min(heights)} to {max(widths)}x{max(heights)})" if len(sizes) > 1
                  else f" (all {next(iter(sizes))[0]}x{next(iter(sizes))[1]})")
        parts.append(f"{resized} resized to {size}x{size}{spread}")
    ratios = [w / h for _, w, h in seen if h]
    odd = [r for r in ratios if not SQUARE_ENOUGH[0] <= r <= SQUARE_ENOUGH[1]]
    if odd:
        parts.append(f"{len(odd)} with an aspect ratio beyond 4:5 (width/height from {min(ratios):.2f} to "
                     f"{max(ratios):.2f}) are squashed to a square, not cropped or padded: crop them beforehand "
                     "where the distortion matters")
    return f"of {len(seen)} images: " + "; ".join(parts) + "." if parts else None


def decode_with_errors(files: list[Path], size: int, workers: int | None = None, skip: bool = False,
                       rgb: bool = False) -> tuple[np.ndarray, list[str | None], list[Seen]]:
    """Every file decoded on all cores; per file None or (with skip) the message of why it could not be read; and
    what each readable file was (mode, width, height)."""
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    if workers <= 1 or len(files) < 256:
        return _decode_many(([str(f) for f in files], size, skip, rgb))
    chunk = max(64, len(files) // (workers * 4))
    jobs = [([str(f) for f in files[i:i + chunk]], size, skip, rgb) for i in range(0, len(files), chunk)]
    with process_pool(workers, spawn=False, grace=0.5) as pool:  # forked: starts at once; dies with its parent
        parts = list(pool.map(_decode_many, jobs))
    return (np.concatenate([p[0] for p in parts]), [e for p in parts for e in p[1]],
            [s for p in parts for s in p[2]])


def decode_all(files: list[Path], size: int, workers: int | None = None) -> np.ndarray:
    return decode_with_errors(files, size, workers)[0]


SPLIT_FOLDERS = ("train", "val", "test")
SMALL_VALIDATION = 50


def split_layout(folder: Path) -> list[str]:
    """The split sub-folders (train/, val/, test/) of a Kaggle-style download, or [] for a plain class layout. A
    download that holds train/ alone is that folder's classes (the study's split makes validation from it)."""
    present = [s for s in SPLIT_FOLDERS if (Path(folder) / s).is_dir()]
    if present and "train" not in present:
        raise UserError(f"{folder} holds {', '.join(p + '/' for p in present)} but no train/ folder: point data.path "
                        "at the folder with the training images (one sub-folder per class, or train/ with val/ and "
                        "test/ beside it); a test set alone goes under the study's test: section.")
    return present


def load(folder: Path, image_size: int, classes: list[str] | None = None, use_cache: bool = True,
         skip_unreadable: bool = False, rgb: bool = False) -> ImageSet:
    """One class sub-folder per class; or train/, val/, test/ folders of those, used as the source's own split."""
    splits = split_layout(Path(folder))
    if not splits:
        return _load_classes(Path(folder), image_size, classes, use_cache, skip_unreadable, rgb)
    if splits == ["train"]:
        data = _load_classes(Path(folder) / "train", image_size, classes, use_cache, skip_unreadable, rgb)
        data.ids = [f"train/{i}" for i in data.ids]
        return data
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
        images, errors, seen = decode_with_errors(files, image_size, skip=skip_unreadable, rgb=rgb)
        ids = [str(f.relative_to(folder)) for f in files]
        source = "dicom" if files and all(dicom.is_dicom(f) for f in files) else "image-folder"
        patients = [dicom.patient_id(f) for f in files] if source == "dicom" else None
        data = ImageSet(images, labels, ids, class_names, source, patients=patients)
        note = inputs_note(seen, image_size, rgb)
        if note:
            data.notes.append(f"{folder}: {note}")
        skipped = [e for e in errors if e]
        if skipped:
            data = data.subset(np.array([e is None for e in errors]))
            data.notes.append(f"skipped {len(skipped)} unreadable image(s) (data.on_error: skip): "
                              + "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
        return data

    if not use_cache:
        return build()
    key = cache.source_key(folder, files, {"source": "image-folder", "size": image_size, "classes": class_names,
                                           "intensity": INTENSITY_VERSION, "inputs_note": 2,
                                           "resample": "bilinear", "grey": "L", "skip": skip_unreadable,
                                           **({"channels": 3} if rgb else {})})
    return cache.cached(key, build)


def index(config: DataConfig) -> dict[str, dict[str, int]]:
    """What a load would find, without decoding an image: per split folder (or "all"), images per class. The same
    checks as a load (classes, empty folders, the layout), so --dry-run catches a wrong data.path."""
    if config.path is None:
        raise UserError(f"data.source is {config.source} but data.path is not set: set data.path to the data folder.")
    folder = Path(config.path)
    splits = split_layout(folder) if folder.is_dir() else []
    counts = {}
    for split in splits or ["all"]:
        where = folder / split if splits else folder
        names = list_classes(where, config.classes or (list_classes(folder / "train", None) if splits else None))
        _, labels = list_files(where, names)
        counts[split] = {n: int((labels == i).sum()) for i, n in enumerate(names)}
    return counts


def _load(config: DataConfig) -> ImageSet:
    if config.path is None:
        raise UserError(f"data.source is {config.source} but data.path is not set: set data.path to the data folder.")
    return load(config.path, config.image_size, config.classes, skip_unreadable=config.on_error == "skip",
                rgb=config.channels == 3)


def _load_test(data: DataConfig, test: TestConfig, class_names: list[str]) -> ImageSet:
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
    _load, _load_test, detect=lambda path, files: path.is_dir() and any(p.is_dir() for p in path.iterdir()),
    index=index, rank=20))
register_source(DataSource(
    "dicom", "class folders of `.dcm` files (pydicom)", "`PatientID` tag (`group_by: {dicom: PatientID}`)",
    "rescale slope/intercept, VOI LUT or window, MONOCHROME1 inverted, scaled to 8 bits; `image-folder` also reads "
    "`.dcm` files by suffix", _load, _load_test, index=index, rank=21))
