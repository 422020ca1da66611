"""Where training waits for the GPU: a study file's base trial trained on phantom images under torch's sync debug
mode, each synchronizing call counted by the place that made it (a place called about once a step waits every step).

    python benchmarks/waits.py examples/pneumonia-cnn.yaml       # the recipe's base trial: augmentation, EMA
    python benchmarks/waits.py examples/course-hw2.yaml --fused 5  # the course MLP's 5 seeds as one fused group

A wait stops Python from queueing the next kernels while the card works. Where a step is many small kernels, a
step with waits takes the CPU's time plus the card's, not the longer of the two, and processes that share the card
wait for each other's kernels too. Needs a CUDA GPU (torch.cuda.set_sync_debug_mode); nothing is written outside a
temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medablate.config.schema import TrialConfig, load_study
from medablate.data.sources import phantom
from medablate.execute.plan import expand
from medablate.train.augment import make_augment
from medablate.train.engine import Split, Trainer, resolve_device
from medablate.train.fusion import FusedGroup, RngSlot
from medablate.train.tasks import make_task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--count", type=int, default=400, help="phantom images per class")
    parser.add_argument("--fused", type=int, default=0, help="this many seeds as one fused group (0: one seed alone)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = resolve_device(args.device)
    study, _ = load_study(args.study, ["data.path=null", f"training.epochs={args.epochs}"])
    config = expand(study).trials[0].config
    size = config.image_size
    data = phantom.generate(args.count, size, 0)
    train_mask = np.arange(len(data)) % 5 != 0
    train = Split.from_numpy(data.images[train_mask], data.labels[train_mask], device)
    val = Split.from_numpy(data.images[~train_mask], data.labels[~train_mask], device)
    folder = Path(tempfile.mkdtemp(prefix="waits-"))
    trainers = [trainer(config, seed, size, folder, device) for seed in range(max(1, args.fused))]
    steps: list[int] = []  # one entry a step (the first seed's, where seeds are fused)
    if args.fused:
        for t in trainers:
            t.begin(train)
        group = FusedGroup(trainers, [RngSlot(device) for _ in trainers],
                           [lambda b, n: steps.append(b)] + [None] * (len(trainers) - 1), [None] * len(trainers))
        fit: Callable[[], object] = lambda: group.fit(train, val)  # noqa: E731
    else:
        fit = lambda: trainers[0].fit(train, val, on_batch=lambda b, n: steps.append(b))  # noqa: E731
    what = f"{args.fused} seeds fused" if args.fused else "one seed"
    print(f"{args.study.name}: base trial, {what}, {args.epochs} epoch(s) of {len(train)} phantom images at {size} px "
          f"on {device}", flush=True)
    print(in_words(waits(fit, device), len(steps)), flush=True)
    return 0


def in_words(places: Counter[str], steps: int) -> str:
    return (f"synchronizing calls in {steps} steps: {sum(places.values())}; by place: "
            + (", ".join(f"{place} x{count}" for place, count in places.most_common(15)) or "none"))


def trainer(config: TrialConfig, seed: int, size: int, folder: Path, device: torch.device) -> Trainer:
    """A run's Trainer as the runner builds it (its augmentation from the trial's data.augment)."""
    t = Trainer(config, make_task(config.training.loss, 2), seed, (size, size), ["normal", "pneumonia"],
                folder / f"seed{seed}", device, 1)
    t.augment = make_augment(config.augment)
    return t


def waits(fit: Callable[[], object], device: torch.device) -> Counter[str]:
    """The places (file:line of the Python that called torch) of every synchronizing call while fit runs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            fit()
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    return Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))


if __name__ == "__main__":
    raise SystemExit(main())
