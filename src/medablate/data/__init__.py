"""Data sources behind one function each for training and test data.

Every source returns an ImageSet (uint8 images, labels, ids); splitting lives in split.py.
"""

from __future__ import annotations

from pathlib import Path

from medablate.config import DataConfig, TestConfig
from medablate.data import image_folder, manifest, medmnist, npy_pair, phantom
from medablate.data.types import ImageSet
from medablate.errors import UserError

__all__ = ["ImageSet", "load_data", "load_test", "resolve_source"]


def resolve_source(source: str, path: Path | None, files: list[str]) -> str:
    """Turn `auto` into a concrete source: no path -> phantom, .npy files -> npy-pair, sub-folders -> image-folder."""
    if source != "auto":
        return source
    if path is None:
        return "phantom"
    if not path.exists() and "mnist" in path.name.lower():
        from medablate.data.medmnist import load as load_medmnist

        load_medmnist(path, 28)  # raises the message that says how to get a MedMNIST file
    if not path.exists():
        raise UserError(f"data path {path} does not exist: set data.path to a folder with the course's .npy files "
                        "or one sub-folder per class, or leave it unset for the embedded phantom data.")
    if path.is_file() and path.suffix.lower() == ".csv":
        return "manifest"
    if path.is_file() and path.suffix.lower() == ".npz":
        return "medmnist"
    if path.is_dir() and all((path / f).is_file() for f in files):
        return "npy-pair"
    if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
        return "image-folder"
    raise UserError(f"cannot tell what kind of data {path} holds: it has neither {' and '.join(files)} nor class "
                    "sub-folders. Set data.source (npy-pair or image-folder) and data.files if needed.")


def load_data(config: DataConfig) -> ImageSet:
    files = config.files or npy_pair.DEFAULT_FILES
    source = resolve_source(config.source, config.path, files)
    if source == "phantom":
        return phantom.generate(config.phantom.count_per_class, config.image_size, config.phantom.seed)
    if config.path is None:
        _missing_path(source)
    if source == "npy-pair":
        return npy_pair.load(config.path, files, config.image_size, config.classes)
    if source == "manifest":
        return manifest.load(config.path, config.image_size, config.classes)
    if source == "medmnist":
        return medmnist.load(config.path, config.image_size, config.classes)
    return image_folder.load(config.path, config.image_size, config.classes,  # image files or DICOM (by suffix)
                             skip_unreadable=config.on_error == "skip")


def load_test(data: DataConfig, test: TestConfig, class_names: list[str]) -> ImageSet:
    """The test set, taking whatever the test section leaves unset from the training data's section."""
    train_files = data.files or npy_pair.DEFAULT_FILES
    source = test.source if test.source != "auto" else resolve_source(data.source, data.path, train_files)
    if source in ("manifest", "medmnist") and test.path is None:
        raise UserError(f"the {source} source holds no test split of its own here: give its rows split=test (manifest), "
                        "set test.path, or drop the test set with --set test=null.")
    if source == "phantom":
        seed = test.phantom.seed if test.phantom.seed is not None else data.phantom.seed + 1
        if seed == data.phantom.seed:
            raise UserError("test.phantom.seed equals data.phantom.seed, so the test images would repeat the "
                            "training images: choose another test seed.")
        return phantom.generate(test.phantom.count_per_class, data.image_size, seed)
    if source == "npy-pair":
        path = test.path or data.path or _missing_path("npy-pair test")
        files = test.files or [f"test_{f}" for f in train_files]
        loaded = npy_pair.load(path, files, data.image_size, class_names)
    elif source in ("manifest", "medmnist"):
        loaded = load_data(DataConfig(source=source, path=test.path, image_size=data.image_size, classes=class_names))
    else:
        path = test.path or _sibling_test_folder(data.path)
        loaded = image_folder.load(path, data.image_size, class_names)
    return loaded


def _sibling_test_folder(train_path: Path | None) -> Path:
    if train_path is not None and train_path.name.lower() == "train" and (train_path.parent / "test").is_dir():
        return train_path.parent / "test"
    raise UserError(f"the study has a test: section but no test folder was found next to {train_path}: set "
                    "test.path to a folder with one sub-folder per class, or drop the test set with --set test=null.")


def _missing_path(source: str) -> Path:
    raise UserError(f"data.source is {source} but data.path is not set: set data.path to the data folder.")
