"""medablate predict: JPEG and PNG, grey and RGB, the same probabilities as the saved test predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from medablate.config.schema import load_study
from medablate.errors import UserError
from medablate.inspect.predict import predict_images
from medablate.study.runner import StudyRunner

from conftest import medablate, write_study


def write_folder(root: Path, count: int, seed: int) -> None:
    """Phantom images as files: class 0 as grey PNGs, class 1 as RGB JPEGs."""
    from medablate.data.sources import phantom

    data = phantom.generate(count, 32, seed)
    for i, (pixels, label) in enumerate(zip(data.images, data.labels)):
        folder = root / ("NORMAL" if label == 0 else "PNEUMONIA")
        folder.mkdir(parents=True, exist_ok=True)
        if label == 0:
            Image.fromarray(pixels[0]).save(folder / f"img{i}.png")
        else:
            Image.fromarray(np.stack([pixels[0]] * 3, -1)).save(folder / f"img{i}.jpeg", quality=95)


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("predict")
    write_folder(root / "xrays" / "train", 40, 0)
    write_folder(root / "xrays" / "test", 8, 1)
    path = write_study(root, data={"path": str(root / "xrays" / "train"), "image_size": 32,
                                   "split": {"method": "stratified", "val_fraction": 0.25, "seed": 0}},
                       test={}, evaluation={"threshold": "youden"}, comparisons=[])
    study, _ = load_study(path)
    StudyRunner(study, root / "out", Console(quiet=True)).run()
    return root / "out" / "trials" / "base-seed0", root / "xrays" / "test"


def test_probabilities_equal_the_saved_test_predictions(trial: tuple[Path, Path]) -> None:
    run_dir, test_folder = trial
    with (run_dir / "predictions_test.csv").open() as handle:
        saved = {row["image"]: row for row in csv.DictReader(handle)}
    results, errors = predict_images(run_dir, [test_folder])
    assert not errors and len(results) == len(saved) == 16
    assert {Path(r.path).suffix for r in results} == {".png", ".jpeg"}
    for result in results:
        row = saved[str(Path(result.path).relative_to(test_folder))]
        assert result.probabilities["PNEUMONIA"] == pytest.approx(float(row["prob_PNEUMONIA"]), abs=1e-6)
        assert result.decision == ["NORMAL", "PNEUMONIA"][int(row["decision_at_threshold"])]


def test_saliency_maps_exist_and_differ(trial: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, test_folder = trial
    images = [test_folder / "NORMAL" / "img0.png", test_folder / "PNEUMONIA" / "img8.jpeg"]
    results, _ = predict_images(run_dir, images, tmp_path / "saliency")
    maps = [np.asarray(Image.open(r.saliency)) for r in results]
    assert all(Path(r.saliency).exists() for r in results)
    assert not np.array_equal(maps[0], maps[1])


def test_other_sizes_are_resized_and_said(trial: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, test_folder = trial
    big = tmp_path / "big.png"
    Image.open(test_folder / "NORMAL" / "img0.png").resize((64, 64)).save(big)
    [result], _ = predict_images(run_dir, [big])
    assert "resized from 64x64 to 32x32" in result.notes[0]


def test_cli_skips_unreadable_files_and_exits_nonzero(trial: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, test_folder = trial
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"not a jpeg")
    result = medablate("predict", str(run_dir), str(test_folder / "NORMAL" / "img0.png"), str(broken), "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    output = json.loads(result.stdout)
    assert len(output["predictions"]) == 1 and "broken.jpeg" in output["errors"][0]


def test_a_folder_without_best_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no best.pt"):
        predict_images(tmp_path, [tmp_path])
