from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medablate.config.schema import DataConfig
from medablate.data import load_data
from medablate.data.sources import image_folder
from medablate.errors import UserError


def make_folder(root: Path, per_class: int = 3, size: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for index, name in enumerate(("NORMAL", "PNEUMONIA")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            if (i + index) % 2:  # mix RGB JPEGs and grey PNGs
                Image.fromarray(pixels).save(root / name / f"img{i}.jpeg")
            else:
                Image.fromarray(pixels[..., 0]).save(root / name / f"img{i}.png")
    return root


def test_reads_rgb_and_grey_into_one_grey_channel_at_image_size(tmp_path: Path) -> None:
    make_folder(tmp_path)
    data = load_data(DataConfig(path=tmp_path, image_size=16))
    assert data.source == "image-folder" and data.class_names == ["NORMAL", "PNEUMONIA"]
    assert data.images.shape == (6, 1, 16, 16) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.ids[0] == "NORMAL/img0.png"


def test_grey_conversion_matches_pillow(tmp_path: Path) -> None:
    make_folder(tmp_path, size=16)
    data = image_folder.load(tmp_path, 16)
    with Image.open(tmp_path / "PNEUMONIA" / "img0.jpeg") as image:
        expected = np.asarray(image.convert("L"))
    assert np.array_equal(data.images[3, 0], expected)


def test_parallel_decode_equals_serial(tmp_path: Path) -> None:
    make_folder(tmp_path, per_class=140, size=12)
    files, _ = image_folder.list_files(tmp_path, ["NORMAL", "PNEUMONIA"])
    assert np.array_equal(image_folder.decode_all(files, 8, workers=2), image_folder.decode_all(files, 8, workers=1))


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "NORMAL" / "broken.jpeg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(UserError, match="broken.jpeg"):
        image_folder.load(tmp_path, 16)


def test_empty_class_folder(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "COVID").mkdir()
    with pytest.raises(UserError, match="COVID holds no images"):
        image_folder.load(tmp_path, 16)


def test_single_class_folder(tmp_path: Path) -> None:
    make_folder(tmp_path)
    for f in (tmp_path / "PNEUMONIA").iterdir():
        f.unlink()
    (tmp_path / "PNEUMONIA").rmdir()
    with pytest.raises(UserError, match="at least\\s+two"):
        image_folder.load(tmp_path, 16)


def test_missing_folder_and_class() -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_data(DataConfig(path=Path("/nonexistent/xrays")))


def test_named_classes_must_exist(tmp_path: Path) -> None:
    make_folder(tmp_path)
    with pytest.raises(UserError, match="VIRAL"):
        image_folder.load(tmp_path, 16, ["NORMAL", "VIRAL"])


def test_on_error_skip_counts_and_names_unreadable_images(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "NORMAL" / "broken.jpeg").write_bytes(b"\xff\xd8 truncated")
    data = load_data(DataConfig(path=tmp_path, image_size=16, on_error="skip"))
    assert len(data) == 6 and "broken.jpeg" not in " ".join(data.ids)
    assert any("skipped 1 unreadable" in n and "broken.jpeg" in n for n in data.notes)
