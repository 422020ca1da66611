"""Data sources behind one function each for training and test data, chosen from the catalogue (sources/).

Every source returns an ImageSet (uint8 images (N, C, H, W), labels, ids); splitting lives in split.py.
"""

from __future__ import annotations

from pathlib import Path

from medablate.config.schema import DataConfig, TestConfig
from medablate.data.sources import all_sources, npy_pair
from medablate.data.sources.medmnist import load as load_medmnist
from medablate.data.types import ImageSet
from medablate.errors import UserError

__all__ = ["ImageSet", "data_index", "load_data", "load_test", "resolve_source"]


def resolve_source(source: str, path: Path | None, files: list[str]) -> str:
    """Turn `auto` into a concrete source: no path -> phantom, else the first source whose detection accepts the
    path (manifest: a .csv, medmnist: a .npz, npy-pair: the class .npy files, image-folder: sub-folders)."""
    if source != "auto":
        return source
    if path is None:
        return "phantom"
    if not path.exists() and "mnist" in path.name.lower():
        load_medmnist(path, 28)  # raises the message that says how to get a MedMNIST file
    if not path.exists():
        raise UserError(f"data path {path} does not exist: set data.path to a folder with the course's .npy files "
                        "or one sub-folder per class, or leave it unset for the embedded phantom data.")
    for name, entry in all_sources().items():
        if entry.detect is not None and entry.detect(path, files):
            return name
    raise UserError(f"cannot tell what kind of data {path} holds: it has neither {' and '.join(files)} nor class "
                    f"sub-folders. Set data.source (one of {', '.join(all_sources())}) and data.files if needed.")


def load_data(config: DataConfig) -> ImageSet:
    """The training data with data.channels channels (RGB sources keep colour with 3; grey ones are repeated)."""
    name = resolve_source(config.source, config.path, config.files or npy_pair.DEFAULT_FILES)
    return all_sources()[name].load(config.model_copy(update={"source": name})).with_channels(config.channels)


def data_index(config: DataConfig) -> tuple[str, dict[str, dict[str, int]] | None]:
    """The source `auto` resolves to, and its images per class per split where the source can count them without
    decoding (None where it cannot); the same errors a load gives for a wrong path, a single class or an empty
    class."""
    name = resolve_source(config.source, config.path, config.files or npy_pair.DEFAULT_FILES)
    source = all_sources()[name]
    if source.index is None:
        return name, None
    counts = source.index(config.model_copy(update={"source": name}))
    for split, per_class in counts.items():
        if len(per_class) < 2 and split in ("all", "train"):
            found = ", ".join(per_class) or "none"
            raise UserError(f"{config.path} has {len(per_class)} class ({found}) in its "
                            f"{'training images' if split == 'all' else 'train/ folder'}: a classifier needs at least "
                            "two, one sub-folder per class (e.g. NORMAL/ and PNEUMONIA/).")
    return name, counts


def load_test(data: DataConfig, test: TestConfig, class_names: list[str]) -> ImageSet:
    """The test set, taking whatever the test section leaves unset from the training data's section."""
    name = test.source if test.source != "auto" else resolve_source(
        data.source, data.path, data.files or npy_pair.DEFAULT_FILES)
    return all_sources()[name].load_test(data, test, class_names).with_channels(data.channels)
