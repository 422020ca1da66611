"""Shared fixtures: tiny studies on small phantom images, and the shared real data when present."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

# Tests write only to temp folders: matplotlib's font cache too (subprocesses inherit this).
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="medablate-mpl-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_TRAIN = REPO.parent / "shared" / "data" / "chest-xray-pneumonia" / "train"


def tiny_study(**sections: Any) -> dict[str, Any]:
    """A study that trains in about a second: 32x32 phantom images, a small MLP, 3 epochs."""
    study: dict[str, Any] = {
        "name": "tiny",
        "seeds": [0],
        "data": {"image_size": 32, "phantom": {"count_per_class": 40}, "split": {"method": "course", "train_per_class": 30}},
        "test": {"phantom": {"count_per_class": 10}},
        "model": {"hidden": [32, 16], "dropout": [0.2, 0.1]},
        "training": {"epochs": 3, "batch_size": 16, "checkpoint_every": "epoch"},  # the kill tests need each epoch
        "comparisons": [{"name": "loss", "vary": {"training.loss": ["BCEWithLogitsLoss", "CrossEntropyLoss"]}}],
    }
    for key, value in sections.items():
        if key == "model" and value.get("name", "mlp") != "mlp":
            study[key] = value  # another model's keys: the tiny MLP's would be unknown keys
        elif isinstance(value, dict) and isinstance(study.get(key), dict):
            study[key] = {**study[key], **value}
        else:
            study[key] = value
    return study


def write_study(folder: Path, **sections: Any) -> Path:
    path = Path(folder) / "study.yaml"
    path.write_text(yaml.safe_dump(tiny_study(**sections), sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests write only to temp folders: the decode-once cache too."""
    monkeypatch.setenv("MEDABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    return write_study(tmp_path)


def require_shared_data() -> Path:
    if not (SHARED_TRAIN / "NORMAL").is_dir():
        pytest.skip(f"the shared chest X-rays are not at {SHARED_TRAIN} (they live beside the repo, never in it)")
    return SHARED_TRAIN


METRIC_KEYS = ["accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv",
               "f1", "brier", "ece", "confusion_matrix"]


def assert_clinical_metrics(metrics: dict) -> None:
    """Every metric for validation and test, at 0.5 and at the threshold, with 95% CIs for test."""
    evaluation = metrics["evaluation"]
    assert 0 < evaluation["threshold"]["value"] <= 1 and evaluation["threshold"]["chosen_on"] == "validation"
    for split in ("val", "test"):
        for at in ("at_0.5", "at_threshold"):
            section = evaluation[split][at]
            assert all(key in section for key in METRIC_KEYS), (split, at)
            if split == "test":
                assert all(section["ci95"][k][0] <= section["ci95"][k][1] for k in ("roc_auc", "accuracy"))
