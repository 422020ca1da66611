"""Bad input, everywhere (issue 12): every case below gets one paragraph naming the culprit and the fix, exit code 2
and no traceback (exit 1 only for predict's documented "some images were unreadable"). docs/bad-inputs.md lists
the same cases with the message each gives: `python tests/test_bad_inputs.py` rewrites it from a real run."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, tiny_study  # noqa: E402

TABLE = REPO / "docs" / "bad-inputs.md"


@dataclass
class Case:
    name: str
    args: Callable[[Path], list[str]]  # builds what the case needs in a temp folder, returns the CLI arguments
    expect: str  # a piece of the message
    code: int = 2


def study(folder: Path, **sections: object) -> str:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(tiny_study(**sections), sort_keys=False))
    return str(path)


def run(*overrides: str, **sections: object) -> Callable[[Path], list[str]]:
    """`medablate run` of the tiny study with sections replaced and --set overrides (validation only unless the
    case needs data: --dry-run is added for config cases by `dry`)."""
    def build(folder: Path) -> list[str]:
        args = ["run", study(folder, **sections), "--out", str(folder / "out")]
        for text in overrides:
            args += ["--set", text]
        return args
    return build


def into(args: list[str], out: Path) -> list[str]:
    """The same command with another --out."""
    index = args.index("--out")
    return [*args[:index + 1], str(out), *args[index + 2:]]


def dry(*overrides: str, **sections: object) -> Callable[[Path], list[str]]:
    return lambda folder: run(*overrides, **sections)(folder) + ["--dry-run"]


def data_run(make: Callable[[Path], Path], **data: object) -> Callable[[Path], list[str]]:
    """`medablate run` on data that `make` writes (1 epoch, no comparisons, no test section)."""
    def build(folder: Path) -> list[str]:
        path = make(folder)
        return run(test=None, comparisons=[], training={"epochs": 1},
                   data={"path": str(path), "image_size": 16, "split": {"method": "stratified"}, **data})(folder)
    return build


def npy(normal: np.ndarray, pneumonia: np.ndarray | None = None) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / "npy").mkdir(exist_ok=True)
        np.save(folder / "npy" / "normal.npy", normal)
        np.save(folder / "npy" / "pneumonia.npy", pneumonia if pneumonia is not None else np.zeros((6, 16, 16), np.uint8))
        return folder / "npy"
    return make


def junk_npy(folder: Path) -> Path:
    path = npy(np.zeros((6, 16, 16), np.uint8))(folder)
    (path / "normal.npy").write_bytes(b"junk")
    return path


def images(classes: dict[str, int], broken: str | None = None) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        root = folder / "xr"
        for name, count in classes.items():
            (root / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((16, 16), 10 * i, np.uint8)).save(root / name / f"{name}-{i}.png")
        if broken:
            (root / broken / "broken.png").write_bytes(b"not a png")
        return root
    return make


def manifest(text: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / "m").mkdir()
        for i in range(12):
            Image.fromarray(np.full((16, 16), i * 20, np.uint8)).save(folder / "m" / f"{i}.png")
        (folder / "m" / "m.csv").write_text(text)
        return folder / "m" / "m.csv"
    return make


def rows(split: str = "", label_3: str | None = None, path_0: str | None = None) -> str:
    lines = ["path,label,split"]
    for i in range(12):
        label = label_3 if i == 3 and label_3 is not None else ("a" if i % 2 else "b")
        lines.append(f"{path_0 if i == 0 and path_0 else f'{i}.png'},{label},{split if i == 0 else ''}")
    return "\n".join(lines) + "\n"


def npz(labels: np.ndarray | None = None, shorter: bool = False) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        arrays = {}
        for split, n in (("train", 40), ("val", 10), ("test", 10)):
            arrays[f"{split}_images"] = np.zeros((n, 28, 28), np.uint8)
            y = (np.arange(n) % 2 if labels is None else labels[:n]).reshape(-1, 1)
            arrays[f"{split}_labels"] = y[:-3] if shorter else y
        (folder / "mnist").mkdir()
        np.savez(folder / "mnist" / "x.npz", **arrays)
        return folder / "mnist" / "x.npz"
    return make


def val_only(folder: Path) -> Path:
    """A download's root that holds val/ (class folders) but no train/."""
    (folder / "root").mkdir()
    images({"a": 3, "b": 3})(folder).rename(folder / "root" / "val")
    return folder / "root"


def same_images(folder: Path) -> Path:
    """Two class folders of one and the same image: every image a duplicate of the first."""
    root = folder / "same"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((16, 16), 7, np.uint8)).save(root / name / f"{name}-{i}.png")
    return root


def manifest_bytes(text: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / "m").mkdir()
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "m" / "0.png")
        (folder / "m" / "m.csv").write_bytes(text)
        return folder / "m" / "m.csv"
    return make


def float_tiffs(folder: Path) -> Path:
    """32-bit float TIFFs (mode F), one of them all NaN."""
    root = folder / "tif"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            values = np.full((16, 16), np.nan if (name, i) == ("a", 0) else float(i), np.float32)
            Image.fromarray(values, mode="F").save(root / name / f"{i}.tif")
    return root


def finished_study(folder: Path) -> Path:
    """A copy of a finished 1-epoch study, trained once per test session beside the cases' folders."""
    source = _FINISHED.get("out")
    if source is None:
        from typer.testing import CliRunner

        from medablate.cli import app

        root = folder.parent / "finished-study"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        result = CliRunner().invoke(app, run(training={"epochs": 1})(root))
        assert result.exit_code == 0, result.output
        source = _FINISHED["out"] = root / "out"
    target = folder / "study-out"
    shutil.copytree(source, target, symlinks=True)
    return target


_FINISHED: dict[str, Path] = {}


def with_finished(build: Callable[[Path, Path], list[str]]) -> Callable[[Path], list[str]]:
    return lambda folder: build(folder, finished_study(folder))


def readonly_out(folder: Path) -> list[str]:
    """A folder this process cannot write: read-only by mode, or (as root, who ignores modes) under /sys."""
    if os.geteuid() == 0:
        return into(run()(folder), Path("/sys/medablate-read-only-out"))
    out = folder / "ro"
    out.mkdir()
    out.chmod(0o555)
    return into(run()(folder), out / "sub")


def bomb(folder: Path) -> list[str]:
    """A PNG whose header claims 40000 x 40000 pixels (more than twice Pillow's limit): a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    (folder / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                      + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    out = finished_study(folder)
    return ["predict", str(out / "trials" / "base-seed0"), str(folder / "bomb.png")]


CASES = [
    # the study file and --set
    Case("study file does not exist", lambda f: ["run", str(f / "nowhere.yaml")], "does not exist"),
    Case("study file is a folder", lambda f: ["run", str(f)], "is a folder, not a study file"),
    Case("study file is not YAML", lambda f: (f / "s.yaml").write_text("a: [1,\n") and ["run", str(f / "s.yaml")],
         "is not valid YAML"),
    Case("study file is a list", lambda f: (f / "s.yaml").write_text("[1, 2]\n") and ["run", str(f / "s.yaml")],
         "must be a mapping"),
    Case("--set without =", dry("training.epochs"), "is not of the form key=value"),
    Case("--set with no key", dry("=5"), "has no key"),
    Case("--set value is broken YAML", dry("training.epochs={"), "is not valid YAML"),
    Case("--set into a value", dry("training.epochs.x=1"), "is a value"),
    Case("misspelt scheduler", dry("training.scheduler=CosineAnealingLR"), "did you mean 'CosineAnnealingLR'"),
    Case("misspelt key", dry("training.epoch=3"), "did you mean 'epochs'"),
    Case("unknown top-level key", dry("tset=1"), "unknown key 'tset'"),
    Case("wrong type", dry("training.batch_size=many"), "training.batch_size"),
    Case("epochs 0", dry("training.epochs=0"), "training.epochs"),
    Case("unknown loss", dry("training.loss=CrossEntropy"), "did you mean 'CrossEntropyLoss'"),
    Case("unknown optimizer", dry("training.optimizer={name: Adamm}"), "did you mean 'Adam'"),
    Case("unknown optimizer argument", dry("training.optimizer={name: Adam, lr: 0.001, betas2: 1}"), "betas"),
    Case("negative learning rate", dry("training.optimizer={name: Adam, lr: -1}"), "cannot be built"),
    Case("scheduler argument of the wrong type", dry("training.scheduler={name: CosineAnnealingLR, T_max: abc}"),
         "'T_max' takes a number"),
    Case("optimizer flag of the wrong type", dry("training.optimizer={name: Adam, lr: 0.001, amsgrad: x}"),
         "'amsgrad' takes true or false"),
    Case("scheduler missing its argument", dry("training.scheduler=StepLR"), "step_size"),
    Case("unsupported scheduler", dry("training.scheduler=LambdaLR"), "LambdaLR"),
    Case("plateau per step", dry("training.scheduler={name: ReduceLROnPlateau, interval: step}"), "once per epoch"),
    Case("plateau against the monitor", dry("training.scheduler={name: ReduceLROnPlateau, mode: max}"),
         "training.scheduler.mode"),
    Case("early stopping patience", dry("training.early_stopping={patience: 0}"), "training.early_stopping.patience"),
    Case("unknown activation argument", dry("model.activation={name: LeakyReLU, negativ_slope: 0.1}"),
         "negative_slope"),
    Case("dropout per block mismatch", dry("model.dropout=[0.5]"), "dropout has 1 values"),
    Case("dropout out of range", dry("model.dropout=[1.5, 0.1]"), "dropout probabilities"),
    Case("monitor unknown", dry("training.monitor=val_f1"), "training.monitor"),
    Case("device unknown", dry("training.device=tpu"), "training.device"),
    Case("image size too small", dry("data.image_size=4"), "data.image_size"),
    Case("repeated seeds", dry("seeds=[0, 0]"), "seeds repeat"),
    Case("study name with spaces", dry("name=my study"), "name"),
    Case("duplicate comparison names", dry("comparisons=[{name: a, vary: {training.loss: [BCEWithLogitsLoss]}}, "
                                           "{name: a, vary: {training.loss: [CrossEntropyLoss]}}]"), "must be unique"),
    Case("empty vary list", dry("comparisons=[{name: a, vary: {training.loss: []}}]"), "empty list"),
    Case("varying a data key", dry("comparisons=[{name: a, vary: {data.channels: [1, 3]}}]"),
         "cannot vary 'data.channels'"),
    Case("varying an unknown key", dry("comparisons=[{name: a, vary: {model.hiden: [[8]]}}]"), "did you mean 'hidden'"),
    Case("unknown model name", dry("model={name: resnt18}"), "did you mean 'resnet18'"),
    Case("unknown key of the cnn", dry("model={name: cnn, widht: [8]}"), "did you mean 'widths'"),
    Case("unknown MONAI network", dry("model={name: monai, net: DenseNet12}"), "did you mean 'DenseNet121'"),
    Case("MONAI argument that medablate sets", dry("model={name: resnet18, kwargs: {num_classes: 3}}"),
         "medablate sets from the data"),
    Case("a segmentation network as the model", run("model={name: monai, net: BasicUNet}"), "not a classifier"),
    Case("a missing weights file", run("model={name: cnn, weights: nowhere.pt}"), "does not exist"),
    Case("unknown data source", dry("data.source=imagefolder"), "did you mean 'image-folder'"),
    Case("reference not a level", dry("comparisons=[{name: a, vary: {training.loss: [BCEWithLogitsLoss, "
                                      "CrossEntropyLoss]}, reference: MSELoss}]"), "is not one of its levels"),
    Case("threshold misspelt", dry("evaluation.threshold=yoden"), "did you mean 'youden'"),
    Case("threshold out of range", dry("evaluation.threshold=1.5"), "between 0 and 1"),
    Case("threshold rule misspelt", dry("evaluation.threshold={prevalance: 0.6}"), "did you mean 'prevalence'"),
    Case("threshold target out of range", dry("evaluation.threshold={specificity: 90}"), "a fraction above 0"),
    Case("robustness shift misspelt", dry("evaluation.shifts=[briteness]"), "did you mean 'brightness'"),
    Case("robustness severity out of range", dry("evaluation.shifts=[{name: noise, severities: [6]}]"),
         "less than or equal to 5"),
    Case("robustness shift of an unknown class", run("evaluation.shifts=[{name: noise, only_class: covid}]"),
         "not a class of this data"),
    Case("group_by with the course split", dry("data.split.group_by={regex: '(p)'}"), "needs method: stratified"),
    Case("group_by regex without a group", dry("data.split={method: stratified, group_by: {regex: 'p'}}"),
         "no capture group"),
    Case("group_by regex does not compile", dry("data.split={method: stratified, group_by: {regex: '(p'}}"),
         "does not compile"),
    Case("test_fraction with the course split", dry("data.split.test_fraction=0.2"), "needs method: stratified"),
    Case("val + test fraction too large", dry("data.split={method: stratified, val_fraction: 0.5, "
                                              "test_fraction: 0.45}"), "too little"),
    Case("test_fraction and a test section", run("data.split={method: stratified, test_fraction: 0.2}"),
         "keep one of them"),
    Case("train_per_class too large", run("data.split.train_per_class=500"), "lower train_per_class"),
    Case("cuda on a machine without one", run("training.device=cuda"), "no CUDA GPU"),
    # data
    Case("data path does not exist", run("data.path=/nowhere/at/all"), "does not exist"),
    Case("folder with neither npy nor class folders", data_run(lambda f: (f / "empty").mkdir() or f / "empty"),
         "cannot tell what kind of data"),
    Case("only one class folder", data_run(images({"a": 4})), "a classifier needs at least two"),
    Case("empty class folder", data_run(images({"a": 4, "b": 0})), "holds no images"),
    Case("unreadable image", data_run(images({"a": 6, "b": 6}, broken="a")), "could not be read"),
    Case("group_by regex finds no id", data_run(images({"a": 6, "b": 6}),
                                                split={"method": "stratified", "group_by": {"regex": "(person\\d+)"}}),
         "finds no patient id"),
    Case("group_by column without patient ids", data_run(images({"a": 6, "b": 6}),
                                                         split={"method": "stratified", "group_by": {"column": "pid"}}),
         "has no patient ids"),
    Case("npy with a channel axis", data_run(npy(np.zeros((6, 16, 16, 3), np.uint8))), "drop the channel axis"),
    Case("npy scaled to 0..1", data_run(npy(np.full((6, 16, 16), 0.5))), "looks scaled to 0..1"),
    Case("npy values above 255", data_run(npy(np.full((6, 16, 16), 300.0))), "not 0..255"),
    Case("npy of int64 that fits", data_run(npy(np.zeros((6, 16, 16), np.int64))), "astype(np.uint8)"),
    Case("npy of shape (N, 0, 0)", data_run(npy(np.zeros((6, 0, 0), np.uint8))), "no pixels"),
    Case("npy of strings", data_run(npy(np.full((6, 4, 4), "a"))), "not pixel data"),
    Case("npy all NaN", data_run(npy(np.full((6, 4, 4), np.nan))), "NaN"),
    Case("npy complex", data_run(npy(np.zeros((6, 4, 4), complex))), "not pixel data"),
    Case("npy with no images", data_run(npy(np.zeros((0, 16, 16), np.uint8))), "holds no images"),
    Case("npy that is not an array", data_run(junk_npy), "could not be read as a .npy"),
    Case("manifest without a label column", data_run(manifest("path\n0.png\n")), "has no column(s) ['label']"),
    Case("manifest row without a label", data_run(manifest(rows(label_3=""))), "label is empty"),
    Case("manifest image missing", data_run(manifest(rows(path_0="gone.png"))), "does not exist"),
    Case("manifest split partly empty", data_run(manifest(rows(split="train"))), "split column is filled"),
    Case("manifest unknown split value", data_run(manifest(rows(split="holdout"))), "is not one of"),
    Case("MedMNIST file missing", run("data.path=/nowhere/pneumoniamnist.npz"), "pip install medmnist"),
    Case("MedMNIST labels shorter than images", data_run(npz(shorter=True)), "labels for"),
    Case("MedMNIST labels of -1", data_run(npz(np.array([-1, 0, 1] * 20))), "negative labels"),
    Case("MedMNIST float labels", data_run(npz(np.array([0.5, 1.0] * 30))), "non-integer labels"),
    # output folders
    Case("--out is a file", lambda f: (f / "file").write_text("x") and into(run()(f), f / "file"),
         "is an existing file"),
    Case("--out is read-only", readonly_out, "cannot write to --out"),
    Case("--out inside the data folder", lambda f: images({"a": 6, "b": 6})(f) and
         into(data_run(lambda g: g / "xr")(f), f / "xr" / "out"), "inside the data folder"),
    Case("other data in the same --out", with_finished(
        lambda f, out: into(run("data.phantom.seed=5", training={"epochs": 1})(f), out)), "different data"),
    Case("changed epochs in a finished --out", with_finished(
        lambda f, out: into(run("training.epochs=2", training={"epochs": 1})(f), out)),
         "training.epochs: 1 -> 2"),
    # the other commands
    Case("evaluate a folder that does not exist", lambda f: ["evaluate", str(f / "nowhere")], "does not exist"),
    Case("evaluate a study folder", with_finished(lambda f, out: ["evaluate", str(out)]), "is a study folder"),
    Case("evaluate --checkpoint other", with_finished(lambda f, out: ["evaluate", str(out / "trials" / "base-seed0"),
                                                                      "--checkpoint", "other"]), "use best or last"),
    Case("evaluate --source unknown", with_finished(lambda f, out: ["evaluate", str(out / "trials" / "base-seed0"),
                                                                    "--source", "jpeg"]), "--source is 'jpeg'"),
    Case("evaluate on the phantom", with_finished(lambda f, out: ["evaluate", str(out / "trials" / "base-seed0"),
                                                                  "--data", str(f), "--source", "phantom"]),
         "--source is 'phantom'"),
    Case("evaluate with other classes", with_finished(lambda f, out: images({"cats": 3, "dogs": 3})(f) and [
        "evaluate", str(out / "trials" / "base-seed0"), "--data", str(f / "xr")]), "['cats', 'dogs']"),
    Case("predict with no images", with_finished(lambda f, out: (f / "none").mkdir() or [
        "predict", str(out / "trials" / "base-seed0"), str(f / "none")]), "no images found"),
    Case("predict a decompression bomb", bomb, "decompression bomb", code=1),
    Case("predict an unfinished run", lambda f: (f / "run").mkdir() or ["predict", str(f / "run"), str(f)],
         "has no best.pt"),
    Case("status of a non-study folder", lambda f: ["status", str(f)], "not a study folder"),
    # issue 24 (right numbers, part 2)
    Case("a StepLR that never steps", dry("training.scheduler={name: StepLR, step_size: 10}"),
         "training.scheduler.step_size is 10"),
    Case("a Kaggle root with val/ but no train/", data_run(val_only), "no train/ folder"),
    Case("one class folder, caught by --dry-run", lambda f: data_run(images({"a": 4}))(f) + ["--dry-run"],
         "a classifier needs at least two"),
    Case("a key of another model", dry("model.widths=[8, 16]"), "'widths' belongs to model cnn"),
    Case("predict on a study folder", with_finished(lambda f, out: images({"a": 1, "b": 1})(f) and [
        "predict", str(out), str(f / "xr")]), "is a study folder, not a run folder"),
    # issue 25 (faults, part 3)
    Case("comparison names that give one file name", dry("comparisons=[{name: loss 1, vary: {training.loss: "
                                                         "[CrossEntropyLoss]}}, {name: loss/1, vary: {training.loss: "
                                                         "[BCEWithLogitsLoss]}}]"), "give the same file name"),
    Case("every image identical", data_run(same_images), "after removing"),
    Case("study file not UTF-8", lambda f: (f / "s.yaml").write_bytes(b"name: caf\xe9\n") and ["run", str(f / "s.yaml")],
         "is not UTF-8 text"),
    Case("study file of binary garbage", lambda f: (f / "s.yaml").write_bytes(bytes(range(128, 256)) * 4) and [
        "run", str(f / "s.yaml")], "is not UTF-8 text"),
    Case("manifest with latin-1 bytes", data_run(manifest_bytes(b"path,label\n0.png,caf\xe9\n")), "is not UTF-8 text"),
    Case("manifest with a NUL byte", data_run(manifest_bytes(b"path,label\n0.png,a\x00\n")), "holds a NUL byte"),
    Case("phantom too large for memory", run("data.phantom.count_per_class=1000000000"), "GiB free"),
    Case("--threads 100000", lambda f: run()(f) + ["--threads", "100000"], "--threads 100000 is far more"),
    Case("evaluate --device tpu", with_finished(lambda f, out: ["evaluate", str(out / "trials" / "base-seed0"),
                                                                "--device", "tpu"]), "--device is 'tpu'"),
    Case("predict --saliency is a file", with_finished(lambda f, out: images({"a": 1, "b": 1})(f) and (
        f / "taken").write_text("x") and ["predict", str(out / "trials" / "base-seed0"), str(f / "xr"), "--saliency",
                                           str(f / "taken")]), "is a file"),
    Case("predict --saliency cannot be made", with_finished(lambda f, out: images({"a": 1, "b": 1})(f) and [
        "predict", str(out / "trials" / "base-seed0"), str(f / "xr"), "--saliency", "/proc/medablate/x"]),
         "cannot be made"),
    Case("a YAML key given twice", lambda f: (f / "s.yaml").write_text("name: x\ntraining: {epochs: 1}\n"
                                                                      "training: {epochs: 2}\n") and [
        "run", str(f / "s.yaml"), "--dry-run"], "appears twice"),
    Case("a negative seed", dry("seeds=[-1]"), "seeds.0"),
    Case("epochs: true", dry("training.epochs=true"), "training.epochs"),
    Case("checkpoint_every: true", dry("training.checkpoint_every=true"), "training.checkpoint_every"),
    Case("--ray-resources num_cpus=0", lambda f: run()(f) + ["--executor", "ray", "--ray-resources", "num_cpus=0"],
         "num_cpus=0"),
    Case("--address where nothing answers", lambda f: run()(f) + ["--executor", "ray", "--address", "127.0.0.1:9"],
         "nothing answered there"),
    Case("--out empty", lambda f: run()(f)[:2] + ["--out", ""], "--out is empty"),
    Case("trials/ replaced by a file", with_finished(lambda f, out: subprocess.run(["rm", "-r", str(out / "trials")])
                                                    and (out / "trials").write_text("x") and into(run(
                                                        training={"epochs": 1})(f), out)), "is a file, not a folder"),
    Case("a float TIFF with NaN pixels", data_run(float_tiffs), "NaN or infinite"),
    Case("model.weights is a text file", lambda f: (f / "w.txt").write_text("not weights\n") and run(
        f"model.weights={f / 'w.txt'}", training={"epochs": 1}, comparisons=[])(f), "could not be read"),
    Case("model.weights that no trial uses", lambda f: (f / "w.txt").write_text("x\n") and dry(
        f"model.weights={f / 'w.txt'}", comparisons=[{"name": "net", "vary": {"model.name": ["cnn"]}}])(f),
         "no trial starts from it"),
    Case("compare with a damaged study.json", with_finished(lambda f, out: (out / "study.json").write_text("{x")
                                                            and ["compare", str(out)]), "study.json is damaged"),
]


def invoke(args: list[str]) -> tuple[int, str, BaseException | None]:
    from typer.testing import CliRunner

    from medablate.cli import app

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output, result.exception


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_bad_input_gets_one_clear_paragraph(case: Case, tmp_path: Path) -> None:
    code, output, exception = invoke(case.args(tmp_path))
    assert isinstance(exception, SystemExit), "".join(traceback.format_exception(exception)) if exception else output
    flat = " ".join(output.split())
    assert code == case.code, flat
    assert "Traceback" not in output
    assert case.expect in flat, flat


def test_the_table_lists_every_case() -> None:
    listed = [line.split("|")[2].strip() for line in TABLE.read_text().splitlines() if line.startswith("| ")][1:]
    assert listed == [c.name for c in CASES]
    assert len(CASES) >= 60


def write_table() -> None:
    import tempfile

    lines = ["# Bad inputs and what medablate says", "",
             "Every case is run by `tests/test_bad_inputs.py` (exit code 2 and no traceback, except the documented "
             "predict case, 1). Rewrite this table from a real run with `python tests/test_bad_inputs.py`.", "",
             "| # | case | exit | message |", "|---|---|---|---|"]
    for index, case in enumerate(CASES, 1):
        with tempfile.TemporaryDirectory() as folder:
            code, output, _ = invoke(case.args(Path(folder)))
        message = " ".join(output.split()).replace("|", "\\|").replace(folder, "<tmp>")
        message = message[message.find("Error:"):] if "Error:" in message else message[-400:]
        lines.append(f"| {index} | {case.name} | {code} | {message} |")
    TABLE.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    write_table()
