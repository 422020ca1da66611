"""Manifest, MedMNIST .npz, Kaggle-style split folders and the decode-once cache, on generated fixtures."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from medablate.config.schema import DataConfig, SplitConfig, load_study
from medablate.data import load_data
from medablate.data.sources import image_folder, manifest, medmnist
from medablate.data.split import make_split
from medablate.errors import UserError
from medablate.study.runner import StudyRunner



def write_images(folder: Path, count: int, size: int = 24, seed: int = 0) -> list[tuple[str, str, str]]:
    """count images per class as PNG files; returns (relative path, label, patient) rows."""
    from medablate.data.sources import phantom

    data = phantom.generate(count, size, seed)
    rows = []
    for i, (pixels, label) in enumerate(zip(data.images, data.labels)):
        name = ["normal", "pneumonia"][label]
        (folder / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[0]).save(folder / name / f"img{i}.png")
        rows.append((f"{name}/img{i}.png", name, f"p{i // 2}"))
    return rows


def write_manifest(folder: Path, rows: list[tuple[str, str, str]], splits: list[str] | None = None) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient_id"] + (["split"] if splits else []))
        for i, row in enumerate(rows):
            writer.writerow(list(row) + ([splits[i]] if splits else []))
    return path


def test_manifest_reads_paths_relative_to_the_csv_with_patients_and_splits(tmp_path: Path) -> None:
    rows = write_images(tmp_path / "images", 6)
    splits = ["train", "train", "val", "test"] * 3
    path = write_manifest(tmp_path, [(f"images/{p}", label, patient) for p, label, patient in rows], splits)
    data = load_data(DataConfig(path=path, image_size=24))
    assert data.source == "manifest" and data.class_names == ["normal", "pneumonia"]
    assert data.patients[:4] == ["p0", "p0", "p1", "p1"] and list(data.preset[:4]) == splits[:4]
    assert np.array_equal(data.images[0, 0], np.asarray(Image.open(tmp_path / "images" / rows[0][0])))


def test_manifest_bad_rows_are_named(tmp_path: Path) -> None:
    rows = write_images(tmp_path / "images", 2)
    path = write_manifest(tmp_path, [(f"images/{p}", label, patient) for p, label, patient in rows] +
                          [("images/missing.png", "normal", "x")])
    with pytest.raises(UserError, match="line 6: image images/missing.png does not exist"):
        manifest.load(path, 24)
    path = write_manifest(tmp_path, [(f"images/{p}", "covid" if i == 0 else label, patient)
                                     for i, (p, label, patient) in enumerate(rows)])
    with pytest.raises(UserError, match="label 'covid' is not among the classes"):
        manifest.load(path, 24, ["normal", "pneumonia"])


def test_group_by_manifest_column_keeps_patients_together(tmp_path: Path) -> None:
    rows = write_images(tmp_path / "images", 20)
    data = manifest.load(write_manifest(tmp_path, [(f"images/{p}", lab, pat) for p, lab, pat in rows]), 24)
    split = make_split(data, SplitConfig(method="stratified", val_fraction=0.25, group_by={"column": "patient_id"}))
    sides: dict[str, set[str]] = {}
    for patient, side in zip(data.patients, split):
        sides.setdefault(patient, set()).add(side)
    assert all(len(s) == 1 for s in sides.values())


def write_npz(path: Path, rgb: bool = False, size: int = 28) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("val", 10), ("test", 12)):
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    np.savez(path, **arrays)


def test_medmnist_official_splits_and_rgb_to_grey(tmp_path: Path) -> None:
    write_npz(tmp_path / "pneumoniamnist.npz")
    data = load_data(DataConfig(path=tmp_path / "pneumoniamnist.npz", image_size=28))
    assert data.source == "medmnist" and len(data) == 52
    assert list(data.preset).count("test") == 12 and data.labels[:4].tolist() == [0, 1, 0, 1]
    write_npz(tmp_path / "rgb.npz", rgb=True)
    assert medmnist.load(tmp_path / "rgb.npz", 32).images.shape == (52, 1, 32, 32)


def test_medmnist_missing_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="pip install medmnist"):
        medmnist.load(tmp_path / "pneumoniamnist.npz", 28)
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UserError, match="no array 'train_labels'"):
        medmnist.load(tmp_path / "bad.npz", 28)


@pytest.mark.slow  # two whole studies; both sources' loading is checked by the tests above
def test_course_study_runs_from_a_manifest_and_from_medmnist(tmp_path: Path) -> None:
    from conftest import REPO

    rows = write_images(tmp_path / "images", 30)
    splits = (["train"] * 6 + ["val"] * 2 + ["test"] * 2) * 6
    path = write_manifest(tmp_path, [(f"images/{p}", lab, pat) for p, lab, pat in rows], splits)
    write_npz(tmp_path / "pneumoniamnist.npz", size=24)
    for data_path in (path, tmp_path / "pneumoniamnist.npz"):
        overrides = [f"data.path={data_path}", "data.image_size=24", "data.split={}", "training.epochs=1"]
        study, _ = load_study(REPO / "examples" / "course-hw2.yaml", overrides)
        out = tmp_path / f"out-{data_path.suffix[1:]}"
        assert StudyRunner(study, out, Console(quiet=True)).run() == 0
        with (out / "results.csv").open() as handle:
            results = list(csv.DictReader(handle))
        assert len(results) == 6 and all(r["status"] == "done" and r["test_acc"] for r in results)
        with (out / "split.csv").open() as handle:
            assert {r["split"] for r in csv.DictReader(handle)} == {"train", "val"}


def test_kaggle_split_folders_are_used_and_a_tiny_val_warns(tmp_path: Path) -> None:
    write_images(tmp_path / "chest" / "train", 10)
    write_images(tmp_path / "chest" / "val", 2, seed=1)
    write_images(tmp_path / "chest" / "test", 3, seed=2)
    data = load_data(DataConfig(path=tmp_path / "chest", image_size=24))
    assert sorted(set(data.preset)) == ["test", "train", "val"] and data.class_names == ["normal", "pneumonia"]
    assert any("val/ folder holds only 4 images" in n for n in data.notes)
    carved = make_split(data, SplitConfig(method="stratified", val_fraction=0.25))
    assert list(carved).count("test") == 6 and list(carved).count("val") == 6


def test_decode_once_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "xr", 3)
    calls = []
    original = image_folder.decode_with_errors
    monkeypatch.setattr(image_folder, "decode_with_errors",
                        lambda files, size, workers=None, skip=False, rgb=False: calls.append(1) or original(files, size, workers, skip, rgb))
    first = image_folder.load(tmp_path / "xr", 24)
    second = image_folder.load(tmp_path / "xr", 24)
    assert len(calls) == 1 and np.array_equal(first.images, second.images) and first.ids == second.ids
    changed = tmp_path / "xr" / "normal" / "img0.png"
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))
    third = image_folder.load(tmp_path / "xr", 24)
    assert len(calls) == 2 and not third.images[0].any()
    image_folder.load(tmp_path / "xr", 16)
    assert len(calls) == 3  # another image size is another entry
    assert list(Path(os.environ["MEDABLATE_CACHE"]).glob("*.npy"))


def test_a_named_medmnist_set_that_is_not_on_disk_says_how_to_get_it() -> None:
    with pytest.raises(UserError, match="pip install medmnist"):
        load_data(DataConfig(path=Path("/nonexistent/pneumoniamnist")))


def test_the_source_catalogue_drives_validation_detection_and_the_readme_table(tmp_path: Path) -> None:
    from medablate.config.schema import validate_study
    from medablate.data import resolve_source
    from medablate.data.sources import all_sources, table
    from medablate.errors import UserError

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert table() in readme
    assert {"npy-pair", "image-folder", "dicom", "manifest", "medmnist", "phantom"} <= set(all_sources())
    with pytest.raises(UserError, match="did you mean 'image-folder'"):
        validate_study({"name": "x", "data": {"source": "imagefolder"}}, "s")
    (tmp_path / "m.csv").write_text("path,label\n")
    (tmp_path / "x.npz").write_bytes(b"")
    assert resolve_source("auto", tmp_path / "m.csv", []) == "manifest"
    assert resolve_source("auto", tmp_path / "x.npz", []) == "medmnist"
    assert resolve_source("auto", None, []) == "phantom"
