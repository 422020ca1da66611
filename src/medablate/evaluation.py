"""Evaluate a saved trial's checkpoint on any supported data source (the course's second task)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


from medablate import atomic, checkpoint, rundir
from medablate.config import DataConfig, TrialConfig
from medablate.data import load_data, resolve_source
from medablate.data.npy_pair import DEFAULT_FILES
from medablate.engine import Split, evaluate, resolve_device
from medablate.errors import UserError
from medablate.models import build_model, count_outputs
from medablate.tasks import make_task


def load_checkpoint(run_dir: Path, which: str = "best") -> dict[str, Any]:
    path = Path(run_dir) / f"{which}.pt"
    if not Path(run_dir).is_dir():
        raise UserError(f"trial folder {run_dir} does not exist: pass a folder under DIR/trials/ "
                        "(medablate status DIR lists them).")
    if not path.exists():
        raise UserError(f"{path} does not exist: the trial has no {which} checkpoint yet (it has not finished an "
                        "epoch, or it diverged first). Run or resume the study, or pick another trial.")
    return checkpoint.load_checkpoint(path)


def evaluate_trial(run_dir: Path, data_path: Path | None, source: str = "auto", files: list[str] | None = None,
                   loss: str | None = None, which: str = "best", name: str | None = None,
                   device_name: str = "auto") -> dict[str, Any]:
    """Rebuild the trial's exact model from its config.yaml, load its checkpoint, score it, write the result."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir, which)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir}/config.yaml is missing, so the model cannot be rebuilt exactly.")
    saved = rundir.read_config(run_dir)
    config = TrialConfig.model_validate({"model": saved["model"], "training": saved["training"]})
    meta = state["meta"]
    task = make_task(loss or config.training.loss, int(meta["num_classes"]))
    task.check_outputs(int(meta["num_outputs"]), f"checkpoint {run_dir / (which + '.pt')}")
    image_shape = tuple(meta["image_shape"])
    resolved = resolve_source(source, data_path, files or DEFAULT_FILES)
    classes = _folder_classes(data_path, meta["class_names"]) if resolved == "image-folder" else None
    data_config = DataConfig(source=resolved, path=data_path, image_size=image_shape[0], files=files, classes=classes)
    images = load_data(data_config)
    if len(images.class_names) != task.num_classes:
        raise UserError(f"the data at {data_path} has {len(images.class_names)} classes {images.class_names}, but the "
                        f"model was trained on {task.num_classes} {meta['class_names']}.")
    if images.image_shape != image_shape:
        raise UserError(f"the images at {data_path} are {images.image_shape}, the model expects {image_shape}.")
    device = resolve_device(device_name)
    model = build_model(config.model, image_shape, task.num_outputs)
    task.check_outputs(count_outputs(model), "the rebuilt model")
    model.load_state_dict(state["model"])
    model.to(device)
    result = evaluate(model, task, Split.from_numpy(images.images, images.labels, device),
                      config.training.eval_batch_size)
    output = {"trial_dir": str(run_dir), "checkpoint": f"{which}.pt", "checkpoint_epoch": int(state["epoch"]),
              "data": str(data_path) if data_path else "phantom", "source": images.source,
              "synthetic_data": images.synthetic, "loss": task.loss_name, "count": result.count,
              "accuracy": result.accuracy, "loss_value": result.loss, "class_names": images.class_names,
              "confusion_matrix": result.confusion}
    label = name or (Path(data_path).name if data_path else "phantom")
    atomic.write_json(run_dir / "evaluations" / f"{rundir.safe_name(label)}.json", output)
    return output


def _folder_classes(path: Path | None, class_names: list[str]) -> list[str] | None:
    """Use the trial's class names as folder names when the folder has exactly those."""
    if path is not None and path.is_dir() and all((path / c).is_dir() for c in class_names):
        return list(class_names)
    return None

