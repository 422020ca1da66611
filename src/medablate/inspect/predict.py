"""Predict new images with a trained trial: exactly its preprocessing, its model, its validated threshold.

Saliency: Grad-CAM on the last convolutional stage for convolutional networks (medablate.inspect.saliency); the input
gradient of the decided class's logit (|d logit / d pixel|, smoothed for display) for the MLP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medablate.config.schema import TrialConfig
from medablate.core import atomic
from medablate.core.names import safe_name
from medablate.data.sources.image_folder import decode, image_extensions
from medablate.errors import UserError
from medablate.folder import checkpoint, claims, layout, rundir
from medablate.folder.records import Example
from medablate.inspect.saliency import method, saliency_map, target_layer
from medablate.models import input_shape
from medablate.train.engine import build_trial_model, normalise
from medablate.train.tasks import make_task


@dataclass
class Prediction:
    path: str
    probabilities: dict[str, float]
    decision: str
    rule: str
    notes: list[str] = field(default_factory=list)
    saliency: str | None = None


def list_images(inputs: list[Path]) -> list[Path]:
    """Files as given; folders expanded to the image files inside them (sorted, recursive)."""
    extensions = image_extensions()
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        else:
            found.append(item)
    return found


class Predictor:
    def __init__(self, run_dir: Path, threshold: float | None = None) -> None:
        run_dir = Path(run_dir)
        layout.require_finished_run(run_dir)
        saved = rundir.user_config(run_dir)
        state = checkpoint.user_checkpoint(run_dir / layout.BEST_PT)
        meta = state["meta"]
        self.class_names: list[str] = list(meta["class_names"])
        self.channels, self.size, _ = input_shape(tuple(meta["image_shape"]))
        config = trial_config(saved)
        self.task = make_task(meta["loss"], int(meta["num_classes"]))
        self.task.check_outputs(int(meta["num_outputs"]), f"checkpoint {run_dir / layout.BEST_PT}")
        self.model = build_trial_model(config, input_shape(tuple(meta["image_shape"])), self.task.num_outputs)
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.threshold = threshold if threshold is not None else \
            rundir.validated_threshold(run_dir, self.task.num_classes == 2)

    def rule(self) -> str:
        if self.threshold is not None:
            return f"{self.class_names[1]} when P({self.class_names[1]}) >= {self.threshold:.4g} (validated threshold)"
        return "the loss's rule (sigmoid > 0.5 / argmax)"

    def load(self, path: Path) -> tuple[np.ndarray, list[str]]:
        notes = []
        try:
            with Image.open(path) as image:
                original = image.size
        except Exception:  # decode() below names the file and the problem
            original = None
        pixels = decode(path, self.size, rgb=self.channels == 3)
        pixels = pixels[None] if pixels.ndim == 2 else pixels
        if original and original != (self.size, self.size):
            notes.append(f"resized from {original[0]}x{original[1]} to {self.size}x{self.size} as in training")
        return pixels, notes

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.task.probabilities(self.model(normalise(torch.from_numpy(pixels))).double()).numpy()

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        if self.threshold is not None:
            return (probabilities[:, 1] >= self.threshold).astype(int)
        return probabilities.argmax(1)

    def saliency(self, pixels: np.ndarray, decision: int) -> np.ndarray:
        """(H, W): Grad-CAM for convolutional networks, else |d logit / d pixel| of the decided class."""
        x = normalise(torch.from_numpy(pixels[None]))
        return saliency_map(self.model, x, decision, self.task.num_outputs, self.saliency_layer(x), find=False)

    def saliency_layer(self, x: torch.Tensor) -> torch.nn.Module | None:
        """Grad-CAM's layer, found once per predictor (one forward pass), not once per image."""
        if not hasattr(self, "_layer"):
            self._layer = target_layer(self.model, x)
        return self._layer


def predict_images(run_dir: Path, inputs: list[Path], saliency_dir: Path | None = None) -> tuple[list[Prediction], list[str]]:
    """Predictions for every readable image, and one message per image that could not be read."""
    predictor = Predictor(run_dir)
    files = list_images(inputs)
    if not files:
        raise UserError(f"no images found in {', '.join(map(str, inputs))}: pass PNG or JPEG files or a folder of them.")
    loaded, errors = [], []
    for path in files:
        try:
            pixels, notes = predictor.load(path)
            loaded.append((path, pixels, notes))
        except UserError as exc:
            errors.append(str(exc))
    if not loaded:
        return [], errors
    probabilities = predictor.probabilities(np.stack([p for _, p, _ in loaded]))
    decisions = predictor.decide(probabilities)
    results = []
    targets = saliency_names([path for path, _, _ in loaded])
    for (path, pixels, notes), probs, decision in zip(loaded, probabilities, decisions, strict=False):
        prediction = Prediction(str(path), {n: float(p) for n, p in zip(predictor.class_names, probs, strict=False)},
                                predictor.class_names[int(decision)], predictor.rule(), notes)
        if saliency_dir is not None:
            target = Path(saliency_dir) / targets[path]
            _save_overlay(target, pixels, predictor.saliency(pixels, int(decision)),
                          f"{path.name}: {prediction.decision}, P({prediction.decision}) {probs[int(decision)]:.3f}")
            prediction.saliency = str(target)
        results.append(prediction)
    return results, errors


def saliency_names(paths: list[Path]) -> dict[Path, str]:
    """`<stem>_saliency.png` per input; inputs whose stems collide (same name, different folders) get their
    parent folders in the name, then a number, so no output overwrites another."""
    stems = [p.stem for p in paths]
    names: dict[Path, str] = {}
    used: set[str] = set()
    for path, stem in zip(paths, stems, strict=False):
        name = stem if stems.count(stem) == 1 else safe_name("_".join([*path.parent.parts[-2:], stem]))
        candidate, n = name, 2
        while candidate in used:
            candidate, n = f"{name}-{n}", n + 1
        used.add(candidate)
        names[path] = f"{candidate}_saliency.png"
    return names


def _save_overlay(path: Path, pixels: np.ndarray, saliency: np.ndarray, title: str) -> None:
    """The image in grey with the smoothed saliency over it (inferno, 45% opacity) and a caption strip above,
    composed with PIL (a matplotlib figure per image cost about 0.14 s; this a few ms)."""
    from matplotlib import colormaps
    from PIL import ImageDraw
    from scipy.ndimage import gaussian_filter

    pixels = pixels[None] if pixels.ndim == 2 else pixels  # (C, H, W)
    heat = gaussian_filter(saliency.astype(np.float64), sigma=max(1.0, pixels.shape[1] / 64))
    heat = heat / heat.max() if heat.max() > 0 else heat
    colours = colormaps["inferno"](heat)[..., :3] * 255
    grey = np.repeat(pixels.astype(np.float64).transpose(1, 2, 0), 3 // pixels.shape[0], axis=2)
    blended = Image.fromarray(np.clip(0.55 * grey + 0.45 * colours, 0, 255).astype(np.uint8))
    if blended.width < 256:  # small images are enlarged so the caption fits
        blended = blended.resize((256, round(256 * blended.height / blended.width)), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (blended.width, blended.height + 16), "white")
    canvas.paste(blended, (0, 16))
    ImageDraw.Draw(canvas).text((3, 2), title, fill="black")
    atomic.write_bytes(path, _png(canvas))


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def trial_config(saved: dict[str, Any]) -> TrialConfig:
    """A run's TrialConfig from its config.yaml (runs from before data.normalize / evaluation.tta have neither)."""
    return TrialConfig.model_validate({"model": saved["model"], "training": saved["training"],
                                       "normalize": saved.get("normalize", "none"), "tta": saved.get("tta", "none"),
                                       "image_size": saved["resolved"]["image_shape"][-1]})


def as_json(predictions: list[Prediction], errors: list[str]) -> dict[str, Any]:
    return {"predictions": [p.__dict__ for p in predictions], "errors": errors}


def write_examples(run_dir: Path, images: np.ndarray, labels: np.ndarray, ids: list[str],
                   threshold: float | None = None, count: int = 3) -> None:
    """A few correctly and wrongly classified images with saliency, for the report (examples/ + examples.json)."""
    predictor = Predictor(run_dir, threshold)
    saved = rundir.read_prediction_arrays(layout.predictions_file(run_dir, "test"), predictor.class_names)
    # the run's own test predictions when they are of these images: a conv net need not score the whole set again
    probabilities = saved[2] if saved is not None and saved[0] == list(ids) else predictor.probabilities(images)
    decisions = predictor.decide(probabilities)
    chosen = []
    for kind, hits in (("correct", decisions == labels), ("wrong", decisions != labels)):
        per_class = [list(np.flatnonzero(hits & (labels == c))) for c in range(len(predictor.class_names))]
        picked: list[int] = []
        while len(picked) < count and any(per_class):  # take the classes in turn, so both show
            for members in per_class:
                if members and len(picked) < count:
                    picked.append(int(members.pop(0)))
        chosen += [(kind, i) for i in picked]
    listing = []
    claims.real_folder(Path(run_dir) / layout.EXAMPLES)
    shown = method(predictor.saliency_layer(normalise(torch.from_numpy(images[:1])))) if chosen else ""
    for n, (kind, i) in enumerate(chosen):
        name = f"{kind}-{n}.png"
        decided = int(decisions[i])
        _save_overlay(Path(run_dir) / layout.EXAMPLES / name, images[i], predictor.saliency(images[i], decided),
                      f"true {predictor.class_names[int(labels[i])]}, predicted {predictor.class_names[decided]}, "
                      f"P({predictor.class_names[decided]}) {probabilities[i, decided]:.3f}")
        listing.append(Example(file=f"{layout.EXAMPLES}/{name}", image=ids[i], kind=kind,
                               label=predictor.class_names[int(labels[i])], decision=predictor.class_names[decided],
                               probability=float(probabilities[i, decided]), saliency=shown))
    rundir.write_examples(run_dir, listing)
