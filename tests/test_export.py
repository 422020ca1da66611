"""`medablate export` (issue 23): an MLP, a CNN and a MONAI network leave medablate as TorchScript and ONNX files
with their preprocessing inside, and give `medablate predict`'s probabilities to 1e-5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_study
from test_cli import medablate

# The issue asks for TorchScript's torch.jit.trace and torch.jit.load, which torch 2.13 marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

MODELS = [{"name": "mlp", "hidden": [16], "dropout": [0.1]}, {"name": "cnn", "widths": [8, 16], "blocks": [1, 1]},
          {"name": "monai", "net": "DenseNet", "kwargs": {"init_features": 8, "growth_rate": 4, "block_config": [2, 2]}}]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three models with dataset standardisation and flip TTA, each exported to ONNX into its run folder; and test
    images written as PNG files at the trained size. (Cross-entropy's softmax head: a test below, without a study.)"""
    root = tmp_path_factory.mktemp("export")
    study = write_study(root, model=MODELS[0], data={"normalize": "dataset"}, evaluation={"tta": "flip"},
                        training={"epochs": 1, "batch_size": 16}, comparisons=[{"name": "model", "vary": {"model": MODELS}}])
    assert medablate("run", str(study), "--out", str(root / "out")).returncode == 0
    for run in runs(root / "out"):
        assert medablate("export", str(run)).returncode == 0  # onnx, into the run folder
    from medablate.data.sources import phantom

    images = root / "images"
    images.mkdir()
    for index, pixels in enumerate(phantom.generate(4, 32, 7).images):
        Image.fromarray(pixels[0]).save(images / f"image-{index}.png")
    return root / "out", images


def predicted(run: Path, images: Path) -> tuple[np.ndarray, np.ndarray]:
    """medablate predict's probabilities, and the images it scored as a uint8 batch."""
    result = medablate("predict", str(run), str(images), "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)["predictions"]
    probabilities = np.array([list(p["probabilities"].values()) for p in found])
    batch = np.stack([np.array(Image.open(p["path"]))[None] for p in found]).astype(np.uint8)
    return probabilities, batch


def runs(out: Path) -> list[Path]:
    found = sorted(p for p in (out / "trials").iterdir())
    assert len(found) == 3
    return found


def test_torchscript_and_onnx_give_the_probabilities_of_predict(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import onnxruntime
    import torch

    out, images = trained
    for run in runs(out):
        expected, batch = predicted(run, images)
        scripted = medablate("export", str(run), "--format", "torchscript", "--out", str(tmp_path / f"{run.name}.pt"))
        assert scripted.returncode == 0, scripted.stderr
        model = torch.jit.load(str(tmp_path / f"{run.name}.pt"))
        np.testing.assert_allclose(model(torch.from_numpy(batch)).numpy(), expected, atol=TOLERANCE, rtol=0)
        session = onnxruntime.InferenceSession(str(run / "exported" / "model.onnx"))
        got = session.run(["probabilities"], {"images": batch})[0]
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0, err_msg=run.name)
        larger = np.repeat(np.repeat(batch, 2, axis=2), 2, axis=3)  # any size: resized inside the graph
        assert np.allclose(session.run(None, {"images": larger})[0].sum(1), 1)


def test_the_sidecar_carries_the_threshold_classes_and_test_metrics(trained: tuple[Path, Path]) -> None:
    out, _ = trained
    run = runs(out)[0]
    sidecar = json.loads((run / "exported" / "model.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert sidecar["threshold"] == metrics["threshold"] and sidecar["classes"] == ["normal", "pneumonia"]
    assert sidecar["input"]["trained_size"] == [32, 32] and sidecar["input"]["dtype"] == "uint8"
    assert sidecar["preprocessing"]["tta"] == "flip" and sidecar["preprocessing"]["normalize"] == "dataset"
    assert sidecar["data_fingerprint"] == metrics["data_fingerprint"]
    assert sidecar["test_metrics"]["count"] == 20 and sidecar["kind"] == "onnx" and sidecar["file"] == "model.onnx"


def test_rgb_input_is_made_grey_in_the_graph(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    out, images = trained
    run = runs(out)[0]
    expected, batch = predicted(run, images)
    target = tmp_path / "rgb.pt"
    assert medablate("export", str(run), "--format", "torchscript", "--input-channels", "3",
                     "--out", str(target)).returncode == 0
    rgb = torch.from_numpy(np.repeat(batch, 3, axis=1))  # grey as RGB: luma of equal channels is the grey value
    np.testing.assert_allclose(torch.jit.load(str(target))(rgb).numpy(), expected, atol=TOLERANCE, rtol=0)


def test_bad_export_requests_are_one_paragraph(trained: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = trained
    run = runs(out)[0]
    for args, message in ((("--format", "pickle"), "--format 'pickle' is not known"),
                          (("--input-channels", "2"), "--input-channels 2 is not 1 or 3"),
                          (("--out", str(tmp_path)), "is a folder")):
        result = medablate("export", str(run), *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    result = medablate("export", str(out))
    assert result.returncode == 2 and "is a study folder" in result.stderr


def test_the_readme_example_runs_the_onnx_model_without_medablate_or_torch(trained: tuple[Path, Path]) -> None:
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("The ONNX file needs nothing of medablate or torch:", 1)[1].split("```python\n", 1)[1]
    code = code.split("```", 1)[0]
    out, images = trained
    run = runs(out)[0]
    (run / "scan.png").write_bytes((images / "image-0.png").read_bytes())
    check = '\nimport sys\nassert "medablate" not in sys.modules and "torch" not in sys.modules, sorted(sys.modules)\n'
    result = subprocess.run([sys.executable, "-c", code + check], cwd=run, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "normal" in result.stdout and "pneumonia" in result.stdout


@pytest.mark.parametrize("loss", ["BCEWithLogitsLoss", "CrossEntropyLoss"])
def test_the_graph_ends_in_the_losss_probabilities(loss: str) -> None:
    import torch

    from medablate.inspect.export import Deployable
    from medablate.models.wrapper import Classifier
    from medablate.train.engine import normalise
    from medablate.train.tasks import make_task

    task = make_task(loss, 2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, task.num_outputs))
    classifier = Classifier(net, 1, "image", "none", task.num_outputs).eval()
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    expected = task.probabilities(classifier(normalise(images)))
    graph = torch.jit.trace(Deployable(classifier, task.num_outputs == 1, 1, 8, 1), images)
    torch.testing.assert_close(graph(images), expected, atol=TOLERANCE, rtol=0)
