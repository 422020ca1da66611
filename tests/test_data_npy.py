from pathlib import Path

import numpy as np
import pytest

from medablate.config.schema import DataConfig
from medablate.data import load_data
from medablate.data.sources import npy_pair
from medablate.errors import UserError


def save_pair(folder: Path, n: int = 6, size: int = 16, dtype=np.uint8, prefix: str = "") -> None:
    rng = np.random.default_rng(0)
    for name in ("normal", "pneumonia"):
        np.save(folder / f"{prefix}{name}.npy", rng.integers(0, 256, (n, size, size)).astype(dtype))


def test_loads_one_array_per_class_in_order(tmp_path: Path) -> None:
    save_pair(tmp_path)
    data = load_data(DataConfig(path=tmp_path, image_size=16))
    assert data.source == "npy-pair" and data.class_names == ["normal", "pneumonia"]
    assert data.images.shape == (12, 1, 16, 16) and data.labels.tolist() == [0] * 6 + [1] * 6
    assert data.ids[0] == "normal.npy[0]" and data.ids[-1] == "pneumonia.npy[5]"
    assert np.array_equal(data.images[:6, 0], np.load(tmp_path / "normal.npy"))


def test_configurable_file_names_and_resize(tmp_path: Path) -> None:
    save_pair(tmp_path, size=20, prefix="test_")
    data = npy_pair.load(tmp_path, ["test_normal.npy", "test_pneumonia.npy"], 10)
    assert data.images.shape == (12, 1, 10, 10) and data.class_names == ["normal", "pneumonia"]


def test_missing_file_is_named(tmp_path: Path) -> None:
    save_pair(tmp_path)
    (tmp_path / "pneumonia.npy").unlink()
    with pytest.raises(UserError, match="pneumonia.npy does not exist"):
        npy_pair.load(tmp_path, ["normal.npy", "pneumonia.npy"], 16)


def test_wrong_shape(tmp_path: Path) -> None:
    save_pair(tmp_path)
    np.save(tmp_path / "normal.npy", np.zeros((4, 16, 16, 3), np.uint8))
    with pytest.raises(UserError, match=r"normal.npy has shape \(4, 16, 16, 3\)"):
        npy_pair.load(tmp_path, ["normal.npy", "pneumonia.npy"], 16)


def test_wrong_dtype_in_range_says_how_to_convert(tmp_path: Path) -> None:
    save_pair(tmp_path, dtype=np.int64)
    with pytest.raises(UserError, match="dtype int64.*astype"):
        npy_pair.load(tmp_path, ["normal.npy", "pneumonia.npy"], 16)


def test_value_range_not_0_255(tmp_path: Path) -> None:
    save_pair(tmp_path)
    np.save(tmp_path / "normal.npy", np.full((3, 16, 16), 1000, np.int16))
    with pytest.raises(UserError, match="not 0..255"):
        npy_pair.load(tmp_path, ["normal.npy", "pneumonia.npy"], 16)
    np.save(tmp_path / "normal.npy", np.random.default_rng(0).random((3, 16, 16)))
    with pytest.raises(UserError, match="0..1"):
        npy_pair.load(tmp_path, ["normal.npy", "pneumonia.npy"], 16)


def test_mixed_sizes_in_a_pair(tmp_path: Path) -> None:
    save_pair(tmp_path)
    np.save(tmp_path / "pneumonia.npy", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(UserError, match="different image sizes"):
        npy_pair.load(tmp_path, ["normal.npy", "pneumonia.npy"], 16)


def test_empty_class_array(tmp_path: Path) -> None:
    save_pair(tmp_path)
    np.save(tmp_path / "normal.npy", np.zeros((0, 16, 16), np.uint8))
    with pytest.raises(UserError, match="no images"):
        npy_pair.load(tmp_path, ["normal.npy", "pneumonia.npy"], 16)


def test_single_class_is_refused(tmp_path: Path) -> None:
    save_pair(tmp_path)
    with pytest.raises(UserError, match="two classes"):
        npy_pair.load(tmp_path, ["normal.npy"], 16)


def test_pickled_or_corrupt_file(tmp_path: Path) -> None:
    save_pair(tmp_path)
    (tmp_path / "normal.npy").write_bytes(b"not an array")
    with pytest.raises(UserError, match="could not be read"):
        npy_pair.load(tmp_path, ["normal.npy", "pneumonia.npy"], 16)
