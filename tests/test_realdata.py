"""The runner on the shared real chest X-rays (skipped where ../shared/data is absent)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from medablate.config.schema import load_study
from medablate.data.sources import image_folder
from medablate.study.runner import StudyRunner

from conftest import assert_clinical_metrics, require_shared_data, write_study


def subset(source: Path, target: Path, per_class: int, skip: int = 0) -> Path:
    """Links to images of each class (after the first `skip`), so tests read the real files without copying them."""
    for name in ("NORMAL", "PNEUMONIA"):
        (target / name).mkdir(parents=True)
        for path in sorted((source / name).iterdir())[skip:skip + per_class]:
            (target / name / path.name).symlink_to(path)
    return target


def test_real_images_decode_to_grey_at_image_size(tmp_path: Path) -> None:
    folder = subset(require_shared_data(), tmp_path / "xrays", 5)
    data = image_folder.load(folder, 64)
    assert data.images.shape == (10, 1, 64, 64) and data.class_names == ["NORMAL", "PNEUMONIA"]
    assert 20 < data.images.mean() < 235 and data.images.std() > 10


def test_small_real_subset_study(tmp_path: Path) -> None:
    folder = subset(require_shared_data(), tmp_path / "xrays" / "train", 40)
    subset(require_shared_data(), tmp_path / "xrays" / "test", 15, skip=500)
    path = write_study(tmp_path, data={"image_size": 64, "path": str(folder),
                                       "split": {"method": "stratified", "val_fraction": 0.25, "seed": 0}},
                       test={}, training={"epochs": 2, "batch_size": 16}, evaluation={"threshold": "youden"})
    study, _ = load_study(path)
    out = tmp_path / "out"
    assert StudyRunner(study, out, Console(quiet=True)).run() == 0
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["done", "done"] and rows[0]["data"] == "image-folder"
    with (out / "split.csv").open() as handle:
        split = list(csv.DictReader(handle))
    assert len(split) == 80 and sum(r["split"] == "val" for r in split) == 20
    assert all(r["file"].endswith(".jpeg") for r in split)
    import json

    metrics = json.loads((out / "trials" / "base-seed0" / "metrics.json").read_text())
    assert_clinical_metrics(metrics)
    assert metrics["evaluation"]["test"]["at_0.5"]["count"] == 30


@pytest.mark.slow
def test_whole_shared_folder_loads(tmp_path: Path) -> None:
    data = image_folder.load(require_shared_data(), 256)
    assert data.images.shape == (5216, 1, 256, 256)
    assert data.counts() == {"NORMAL": 1341, "PNEUMONIA": 3875}
    assert np.isin(data.labels, [0, 1]).all()


def test_shared_folder_grouped_by_patient_has_no_leak_and_counts_duplicates() -> None:
    from medablate.config.schema import SplitConfig
    from medablate.data.duplicates import find_duplicates
    from medablate.data.split import KERMANY_PATIENTS, VAL, make_split, patients

    data = image_folder.load(require_shared_data(), 64)
    config = SplitConfig(method="stratified", val_fraction=0.2, seed=0, group_by={"regex": KERMANY_PATIENTS})
    split = make_split(data, config)
    owners = np.asarray(patients(data, KERMANY_PATIENTS), dtype=object)
    assert not set(owners[split == VAL]) & set(owners[split != VAL])
    assert 2500 < len(set(owners)) < 3200  # "about 2850 patients"
    found = find_duplicates(data, split, None)
    assert found.groups >= 1 and sum(found.dropped.values()) <= found.groups * 30
