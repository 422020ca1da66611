"""`medablate export RUN_DIR --format torchscript|onnx`: a run's best model as one file that another program runs
without medablate, its preprocessing inside the graph, and a JSON sidecar that says how to use it right.

The graph takes uint8 images (N, C, H, W), any N, H and W; C is the channels the model trained on unless
`input_channels` says otherwise (grey is repeated into RGB; RGB becomes grey by ITU-R 601 luma, as the decoder
does). It resizes them to the training size (bilinear, antialiased, as Pillow resized the training images:
nothing changes when they already have that size), scales them to [0, 1], standardises them (data.normalize),
applies the test-time augmentation (evaluation.tta) and returns class probabilities (N, classes). The sidecar
names the classes, the input, the validated threshold and its rule, the data fingerprint, medablate's version
and the run's test metrics: a decision needs the threshold, which the probabilities alone do not carry.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

import medablate
from medablate.core import atomic
from medablate.errors import UserError
from medablate.folder import layout, rundir
from medablate.folder.records import ExportRecord
from medablate.inspect.predict import Predictor

Format = Literal["torchscript", "onnx"]
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as Pillow's convert("L")
OPSET = 18  # the first with an antialiased Resize


class Deployable(nn.Module):
    """uint8 images in, class probabilities out: the whole path from pixels to probabilities, in one module."""

    luma: torch.Tensor

    def __init__(self, classifier: nn.Module, single_logit: bool, channels: int, size: int,
                 input_channels: int) -> None:
        super().__init__()
        self.classifier, self.single_logit = classifier.eval(), single_logit
        self.channels, self.size, self.input_channels = channels, size, input_channels
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1))
        self.requires_grad_(False)  # an inference graph: its outputs need no autograd history

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if self.input_channels == 3 and self.channels == 1:
            x = (x * self.luma).sum(dim=1, keepdim=True)
        elif self.input_channels == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        logits = self.classifier(x / 255).float()
        if self.single_logit:
            positive = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - positive, positive], dim=1)
        return torch.softmax(logits, dim=1)


def deployable(predictor: Predictor, input_channels: int | None = None) -> Deployable:
    return Deployable(predictor.model, predictor.task.num_outputs == 1, predictor.channels, predictor.size,
                      input_channels or predictor.channels)


def export_run(run_dir: Path, kind: Format, out: Path | None = None, input_channels: int | None = None) -> Path:
    """Write the run's model as `out` (default: RUN_DIR/exported/model.pt or model.onnx) and its sidecar
    (the same name with .json); the model file's path."""
    run_dir = Path(run_dir)
    layout.require_finished_run(run_dir)
    predictor = Predictor(run_dir)
    out = Path(out) if out is not None else run_dir / layout.EXPORTED / f"model{SUFFIX[kind]}"
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a folder: give a file name, e.g. {out / ('model' + SUFFIX[kind])}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    module = deployable(predictor, input_channels)
    example = torch.zeros(2, module.input_channels, predictor.size, predictor.size, dtype=torch.uint8)
    temp = out.with_name(f"{atomic.temp_prefix(out.name)}{out.name}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and exporter chatter: the tests compare the outputs instead
            (_torchscript if kind == "torchscript" else _onnx)(module, example, temp)
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    atomic.write_text(sidecar_of(out), ExportRecord.model_validate(_facts(run_dir, predictor, module, kind, out))
                      .model_dump_json(indent=2))
    return out


def sidecar_of(model_file: Path) -> Path:
    return model_file.with_suffix(".json")


def _torchscript(module: Deployable, example: torch.Tensor, path: Path) -> None:
    traced = torch.jit.trace(module, example, check_trace=False)
    torch.jit.save(traced, str(path))


def _onnx(module: Deployable, example: torch.Tensor, path: Path) -> None:
    batch, height, width = (torch.export.Dim(n, min=1, max=8192) for n in ("batch", "height", "width"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
            torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=["probabilities"],
                              opset_version=OPSET, dynamo=True, external_data=False,
                              dynamic_shapes={"images": {0: batch, 2: height, 3: width}}, verbose=False)
    except Exception as exc:  # a network torch.export cannot trace: say which, not a traceback
        raise UserError(f"the model cannot be exported to ONNX ({type(exc).__name__}: {str(exc)[:300]}). "
                        "Export it with --format torchscript instead.") from None


def _facts(run_dir: Path, predictor: Predictor, module: Deployable, kind: Format, out: Path) -> dict[str, object]:
    metrics = rundir.finished_metrics(run_dir)
    config = rundir.user_config(run_dir)
    test = metrics.evaluation.test if metrics and metrics.evaluation else None
    return {
        "format": 1, "file": out.name, "kind": kind, "run": run_dir.name, "study": config.get("study"),
        "classes": predictor.class_names,
        "input": {"name": "images", "dtype": "uint8", "layout": "NCHW", "channels": module.input_channels,
                  "trained_size": [predictor.size, predictor.size], "any_size": True},
        "output": {"name": "probabilities", "shape": "(N, classes)"},
        "preprocessing": {"channels": "grey repeated / RGB to grey by ITU-R 601 luma" if module.input_channels !=
                          module.channels else "as given", "resize": "bilinear, antialiased, to the trained size",
                          "scale": "x / 255", "normalize": config.get("normalize", "none"),
                          "tta": config.get("tta", "none")},
        "threshold": predictor.threshold, "rule": predictor.rule(),
        "data_fingerprint": metrics.data_fingerprint if metrics else None,
        "medablate_version": medablate.__version__, "torch_version": torch.__version__,
        "test_metrics": test.at_threshold.model_dump() if test and test.at_threshold else
        (test.at_rule.model_dump() if test else None),
    }
