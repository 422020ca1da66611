"""Shared fixtures: tiny studies on small phantom images, and the shared real data when present."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import pytest
import yaml

# Tests write only to temp folders: matplotlib's font cache too (subprocesses inherit this).
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="medablate-mpl-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_TRAIN = REPO.parent / "shared" / "data" / "chest-xray-pneumonia" / "train"


# The files whose tests take longest, longest first (seconds on the 2-core CI machine, one process): pytest-xdist
# hands whole files to its processes in this order, so no long file is left to run alone at the end.
LONGEST_FIRST = ("test_resume.py", "test_faults.py", "test_faults3.py", "test_injection.py", "test_study.py",
                 "test_first_hour.py", "test_workers.py", "test_report.py", "test_contract.py", "test_compare.py",
                 "test_ray.py", "test_models.py", "test_kfold.py", "test_export.py")


# A study's figures are drawn in PNG only, not again as PDF and SVG: two thirds of the time of every test study's
# analysis. The tests of those formats and their contents ask for all three (every_figure_format).
os.environ.setdefault("MEDABLATE_FIGURE_FORMATS", "png")


@pytest.fixture(scope="module")
def every_figure_format() -> Any:
    before = os.environ.get("MEDABLATE_FIGURE_FORMATS")
    os.environ["MEDABLATE_FIGURE_FORMATS"] = "png,pdf,svg"
    yield
    if before is None:
        os.environ.pop("MEDABLATE_FIGURE_FORMATS", None)
    else:
        os.environ["MEDABLATE_FIGURE_FORMATS"] = before


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a file, and among the other files, the collected order stays


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


def medablate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command line, called in this process (typer's CliRunner): no interpreter start and no import of torch per
    call. A traceback the command would have printed is in stderr, as a real process would show it, so "no
    traceback" checks still bite. medablate_process where the process boundary is the point (kills, signals,
    environment variables read at start, spawned workers)."""
    from typer.testing import CliRunner

    from medablate.cli import app

    argv, folder, handlers = sys.argv, os.getcwd(), {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    threads = _torch_threads()
    sys.argv = ["medablate", *args]  # the command line a study records in study.json
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(app, list(args))
    finally:
        sys.argv = argv
        os.chdir(folder)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["medablate", *args], result.exit_code, result.stdout, stderr)


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """uninterrupted(study file) -> the output folder of that study run once without a stop (in this process: the
    stopped run it is compared with is a process of its own, so every kill test also checks that the two give the
    same numbers); trained once per session for each configuration (the kill tests of one configuration share it).
    Studies that differ only in training.checkpoint_every share one: the cadence must not change a number, so
    every kill test checks that too."""
    finished: dict[str, Path] = {}

    def run(study: Path) -> Path:
        config = yaml.safe_load(study.read_text())
        config.get("training", {}).pop("checkpoint_every", None)
        text = yaml.safe_dump(config, sort_keys=True)
        if text not in finished:
            out = tmp_path_factory.mktemp("uninterrupted") / "out"
            result = medablate("run", str(study), "--out", str(out))
            assert result.returncode == 0, result.stderr
            finished[text] = out
        return finished[text]

    return run


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def medablate_process(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
                      ) -> subprocess.CompletedProcess[str]:
    """The command line in a process of its own, as a user starts it."""
    return subprocess.run([sys.executable, "-m", "medablate.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})})


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


HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
HOST_MADE = ("epoch_permutation",)  # seeds its own CPU generator from a CPU draw, as DataLoader does


class DeviceWaits:
    """What would make a GPU wait for every kernel queued so far, while training steps: a tensor's value read back
    to the host (item, float, bool, tolist, ...), or host data copied to the device (torch.tensor or as_tensor with
    a device, new_tensor, indexing with a Python list: PyTorch waits for such a copy to finish). `waits` holds
    (steps done before it, what and where). The test says when steps run: `begin()` (a step starts),
    `stepped(more)` (one ended; more: another follows without a pause). Not counted: the optimizers' own step
    counters (host tensors on a CPU; on a GPU their fused kernels keep them on the card), and HOST_MADE functions,
    whose tensors stay on the host."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import torch

        self.done = 0
        self.watching = False
        self.waits: list[tuple[int, str]] = []
        always = lambda *args, **kwargs: True  # noqa: E731
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, self._watched(name, getattr(torch.Tensor, name), always))
        for name in ("tensor", "as_tensor"):
            monkeypatch.setattr(torch, name, self._watched(
                f"torch.{name}", getattr(torch, name), lambda *args, **kwargs: kwargs.get("device") is not None))
        monkeypatch.setattr(torch.Tensor, "new_tensor", self._watched("new_tensor", torch.Tensor.new_tensor, always))
        for name in ("__getitem__", "__setitem__"):
            monkeypatch.setattr(torch.Tensor, name, self._watched(
                f"{name} with a list", getattr(torch.Tensor, name), lambda tensor, index, *rest: listed(index)))

    def begin(self) -> None:
        self.watching = True

    def stepped(self, more: bool = False) -> None:
        self.done += 1
        self.watching = more

    def after_the_first_step(self) -> list[str]:
        return [where for done, where in self.waits if done > 0]

    def _watched(self, name: str, original: Any, waits: Any) -> Any:
        def watched(*args: Any, **kwargs: Any) -> Any:
            if self.watching and waits(*args, **kwargs):
                frames = traceback.extract_stack()[:-1]
                if frames[-1].name not in HOST_MADE and not any(
                        os.sep + os.path.join("torch", "optim") + os.sep in f.filename for f in frames):
                    self.waits.append((self.done, f"{name} at {frames[-1].filename}:{frames[-1].lineno}"))
            return original(*args, **kwargs)
        return watched


def listed(index: Any) -> bool:
    """Whether a tensor index holds a Python list (copied to the tensor's device before the indexing)."""
    return isinstance(index, list) or (isinstance(index, tuple) and any(isinstance(i, list) for i in index))
