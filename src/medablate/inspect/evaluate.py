"""Evaluate a saved trial's checkpoint on its study's test set or on any data a study can read.

Classes are matched to the model's by name (case-insensitive), never by position; images the study trained
or validated on are counted and the result says so; the metrics are the clinical ones `run` reports, with
95% bootstrap CIs, at the loss's rule and at the run's validated threshold.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from medablate.analysis import stats
from medablate.config.schema import DataConfig
from medablate.core import atomic, names
from medablate.data import load_data, resolve_source
from medablate.data.duplicates import pixel_hashes
from medablate.data.sources.image_folder import SPLIT_FOLDERS
from medablate.data.sources.npy_pair import DEFAULT_FILES
from medablate.data.types import ImageSet
from medablate.errors import UserError
from medablate.execute.plan import read_study
from medablate.execute.prepare import load_study_data
from medablate.folder import checkpoint, claims, layout, rundir
from medablate.folder.layout import require_run_folder
from medablate.folder.records import EvaluationComparison, EvaluationFile, Overlap, SplitScores
from medablate.inspect.predict import trial_config
from medablate.models import count_outputs, input_shape
from medablate.scoring.clinical import Predictions, score
from medablate.train.engine import Split, build_trial_model, evaluate, resolve_device
from medablate.train.tasks import make_task

STUDY_TEST = "the study's test set"


def load_checkpoint(run_dir: Path, which: str = "best") -> dict[str, Any]:
    path = require_run_folder(run_dir, f"{which}.pt")
    return checkpoint.user_checkpoint(path)


def align_classes(images: ImageSet, model_classes: list[str], where: str) -> ImageSet:
    """Relabel images so that label i means the model's class i, matching class names case-insensitively. Data of
    some of the model's classes only (a normal-only set measures specificity) is accepted."""
    index = {name.lower(): i for i, name in enumerate(model_classes)}
    found = [name.lower() for name in images.class_names]
    if not found or any(name not in index for name in found) or len(set(found)) != len(found):
        raise UserError(f"the classes of {where} are {images.class_names}, but the model was trained on "
                        f"{model_classes}: the names must match (case does not matter). Rename the class folders "
                        "(or files, or labels), or pass data with the model's classes (all, or some of them).")
    mapping = np.array([index[name] for name in found])
    images.labels = mapping[images.labels]
    images.class_names = list(model_classes)
    return images


def class_folders(path: Path, model_classes: list[str]) -> list[str] | None:
    """The class sub-folders of an image folder that name some of the model's classes (None where data.classes need
    not be given: not a folder, or a Kaggle train/val/test layout)."""
    if not path.is_dir():
        return None
    names = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any(n in SPLIT_FOLDERS for n in names):
        return None
    known = {c.lower() for c in model_classes}
    return [n for n in names if n.lower() in known] or None


def study_test_set(run_dir: Path) -> ImageSet:
    """The test set the run's study used (same source, split and duplicate removal), or a UserError."""
    folder = Path(run_dir).resolve().parent.parent
    if not (folder / layout.STUDY_JSON).exists():
        raise UserError(f"{run_dir} is not inside a study folder (no {folder / layout.STUDY_JSON}), so its study's "
                        "test set is unknown: pass --data with the images to evaluate on.")
    _, study = read_study(folder)
    data = load_study_data(study, Console(quiet=True))
    if data.test is None:
        raise UserError(f"the study in {folder} has no test set, and evaluating on its validation images would "
                        "only repeat its own checkpoint choice: pass --data with images the model never saw.")
    return data.test


def load_images(data_path: Path, source: str, files: list[str] | None, image_size: int,
                model_classes: list[str], channels: int = 1) -> ImageSet:
    """Any source `run` reads (image folders, DICOM, npy pairs, manifests, MedMNIST), classes aligned by name."""
    resolved = resolve_source(source, data_path, files or DEFAULT_FILES)
    if resolved == "phantom":
        raise UserError("--source phantom would score the model on synthetic images: pass --data with real images, "
                        "or leave --data out to use the study's own test set.")
    classes = class_folders(data_path, model_classes) if resolved in ("image-folder", "dicom") else None
    images = load_data(DataConfig(source=resolved, path=data_path, image_size=image_size, files=files,
                                  channels=3 if channels == 3 else 1, classes=classes))
    return align_classes(images, model_classes, f"{data_path} ({resolved})")


def overlap(study_folder: Path, images: ImageSet) -> Overlap | None:
    """How many images also belong to the study's train/val split: by pixels (split.csv's hashes), else by name."""
    path = study_folder / rundir.SPLIT_CSV
    if not path.exists():
        return None
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    by_pixels = bool(rows) and all(r.get("pixels_sha1") for r in rows)
    if by_pixels:
        seen = {r["pixels_sha1"] for r in rows}
        shared = sum(h in seen for h in pixel_hashes(images))
    else:
        seen = {r["file"] for r in rows}
        shared = sum(atomic.csv_text(i) in seen for i in images.ids)  # split.csv keeps a formula-like name as text
    return Overlap(shared_images=int(shared), of=len(images), matched_by="pixels" if by_pixels else "file names")


def overlap_warning(found: Overlap | None) -> str | None:
    if not found or not found.shared_images:
        return None
    return (f"{found.shared_images} of {found.of} images are also in the study's train/validation split "
            f"(matched by {found.matched_by}): the model trained or chose its checkpoint on them, so this figure "
            "is not a test result.")


def evaluate_trial(run_dir: Path, data_path: Path | None, source: str = "auto", files: list[str] | None = None,
                   loss: str | None = None, which: str = "best", name: str | None = None,
                   device_name: str = "auto") -> EvaluationFile:
    """Rebuild the trial's exact model from its config.yaml, load its checkpoint, score it, write the result."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir, which)
    if not (run_dir / layout.CONFIG_YAML).exists():
        raise UserError(f"{run_dir / layout.CONFIG_YAML} is missing, so the model cannot be rebuilt exactly.")
    saved = rundir.user_config(run_dir)
    config = trial_config(saved)
    meta = state["meta"]
    task = make_task(loss or config.training.loss, int(meta["num_classes"]))
    task.check_outputs(int(meta["num_outputs"]), f"checkpoint {run_dir / (which + '.pt')}")
    shape = input_shape(tuple(meta["image_shape"]))
    model_classes = list(meta["class_names"])
    if data_path is None:
        images = align_classes(study_test_set(run_dir), model_classes, STUDY_TEST)
    else:
        images = load_images(Path(data_path), source, files, shape[1], model_classes, shape[0])
    images = images.with_channels(shape[0])
    if images.input_shape != shape:
        raise UserError(f"the images at {data_path} are {images.input_shape}, the model expects {shape}.")
    device = resolve_device(device_name)
    model = build_trial_model(config, shape, task.num_outputs)
    task.check_outputs(count_outputs(model), "the rebuilt model")
    model.load_state_dict(state["model"])
    model.to(device)
    result = evaluate(model, task, Split.from_numpy(images.images, images.labels, device),
                      config.training.eval_batch_size, keep_predictions=True)
    threshold = rundir.validated_threshold(run_dir, task.num_classes == 2)
    metrics = rundir.metrics_or_none(run_dir)
    settings = (metrics.evaluation_config if metrics else None) or {}
    resamples = int(settings.get("bootstrap_resamples", 2000))  # type: ignore[arg-type]  # a number when recorded
    assert result.probabilities is not None and result.decisions is not None  # keep_predictions
    predictions = Predictions(images.labels, result.probabilities, result.decisions)
    scored = score(predictions, threshold, model_classes, resamples)
    shared = overlap(run_dir.resolve().parent.parent, images) if data_path is not None else None
    label = names.safe_name(name or (Path(data_path).name if data_path else "study-test"))
    path, predictions_path = layout.evaluation_files(run_dir, label)
    output = EvaluationFile(
        trial_dir=str(run_dir), checkpoint=f"{which}.pt", checkpoint_epoch=int(state["epoch"]),
        data=str(data_path) if data_path else STUDY_TEST, source=images.source, synthetic_data=images.synthetic,
        loss=task.loss_name, count=result.count, accuracy=result.accuracy, loss_value=result.loss,
        class_names=model_classes, confusion_matrix=result.confusion, threshold=threshold,
        metrics=SplitScores.model_validate(scored),
        confusion_matrix_at_threshold=(scored.get("at_threshold") or {}).get("confusion_matrix"),
        classes_present=[model_classes[i] for i in sorted(set(images.labels.tolist()))],
        undefined=undefined_metrics(scored), overlap=shared, warning=overlap_warning(shared),
        predictions_file=str(predictions_path))
    claims.real_folder(path.parent)
    rundir.write_predictions(predictions_path, list(images.ids), images.labels,
                             result.probabilities, result.decisions, model_classes, threshold)
    atomic.write_json(path, output.plain())
    return output


def compare_evaluations(result: EvaluationFile, other: EvaluationFile) -> EvaluationFile:
    """Two checkpoints evaluated on the same images, compared image by image (McNemar on their decisions, DeLong on
    their ROC AUCs with two classes); written into the first evaluation's file."""
    here, there = (rundir.read_predictions(Path(r.predictions_file)) for r in (result, other))
    if [r["image"] for r in here] != [r["image"] for r in there] or result.class_names != other.class_names:
        raise UserError(f"{result.trial_dir} and {other.trial_dir} were not evaluated on the same images with the "
                        "same classes, so they cannot be compared image by image.")
    labels = np.array([int(r["label"]) for r in here])
    right = [np.array([int(r["decision"]) for r in rows]) == labels for rows in (here, there)]
    only_here, only_there, p = stats.mcnemar_exact(*right)
    found = EvaluationComparison(against=other.trial_dir, count=len(labels), accuracy=float(right[0].mean()),
                                 accuracy_against=float(right[1].mean()), right_only_here=only_here,
                                 right_only_there=only_there, mcnemar_p=p)
    if len(result.class_names) == 2 and len(set(labels.tolist())) == 2:
        positive = f"prob_{result.class_names[1]}"
        scores = [np.array([float(r[positive]) for r in rows]) for rows in (here, there)]
        delong = stats.delong(labels == 1, scores[0], scores[1])
        found = found.model_copy(update={"roc_auc": delong.auc_a, "roc_auc_against": delong.auc_b,
                                         "auc_difference": delong.difference, "auc_ci95": [delong.ci_low, delong.ci_high],
                                         "delong_z": delong.z, "delong_p": delong.p})
    output = result.model_copy(update={"comparison": found})
    atomic.write_json(layout.evaluation_record_of(Path(result.predictions_file)), output.plain())
    return output


def undefined_metrics(scored: dict[str, Any]) -> list[str]:
    """Metrics that the data cannot define (with one class: the AUCs, the other class's rates)."""
    section = scored.get("at_0.5") or {}
    return [k for k, v in section.items() if v is None and k not in ("note",)]
