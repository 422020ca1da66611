"""Fused seeds vs one after another: seconds per epoch of a trial's seeds, and how far their losses differ.

    python benchmarks/fusion_time.py                           # the course MLP, 5 seeds, 3 epochs, phantom 256 px
    python benchmarks/fusion_time.py --model cnn --size 128 --seeds 3 --device cuda

Trains the same trial's seeds twice on the same data (phantom images, the course split sizes): each seed alone with
its own Trainer, then all seeds as one FusedGroup (training.fuse_seeds). Prints, as each is done: the seconds per
epoch (all seeds together; the first epoch, with its warm-up, apart), the speed-up, and the largest difference of a
training or validation loss between a seed's fused and unfused run (float rounding, and chaos on a GPU, where
dropout masks also differ). Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medablate.config.schema import TrialConfig
from medablate.data.sources import phantom
from medablate.train.engine import FitResult, Split, Trainer, resolve_device
from medablate.train.fusion import FusedGroup, RngSlot
from medablate.train.tasks import make_task


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def trainer(config: TrialConfig, seed: int, size: int, folder: Path, device: torch.device) -> Trainer:
    return Trainer(config, make_task(config.training.loss, 2), seed, (size, size), ["normal", "pneumonia"],
                   folder / f"seed{seed}", device, 1)


def epoch_seconds(fits: list[FitResult]) -> tuple[float, float]:
    """The first epoch's seconds and the mean of the others, of all seeds together (fused seeds share an epoch)."""
    rows = np.array([[row["seconds"] for row in f.history] for f in fits])
    return float(rows[:, 0].max()), float(rows[:, 1:].max(axis=0).mean()) if rows.shape[1] > 1 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn", "resnet18"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--count", type=int, default=1000, help="phantom images per class")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = phantom.generate(args.count, args.size, 0)
    train_mask = np.arange(len(data)) % 5 != 0
    train = Split.from_numpy(data.images[train_mask], data.labels[train_mask], device)
    val = Split.from_numpy(data.images[~train_mask], data.labels[~train_mask], device)
    model = {"name": args.model} if args.model != "mlp" else {}
    config = TrialConfig.model_validate({"model": model, "training": {
        "epochs": args.epochs, "checkpoint_every": "auto", "fuse_seeds": "on", "device": device.type}})
    seeds = list(range(args.seeds))
    root = Path(tempfile.mkdtemp(prefix="fusion-time-"))
    print(f"{args.model}, {args.size} px, {len(train)} training images, {args.seeds} seeds x {args.epochs} epochs, "
          f"{device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), flush=True)
    started = time.perf_counter()
    alone = [trainer(config, s, args.size, root / "alone", device).fit(train, val) for s in seeds]
    sync(device)
    alone_wall = time.perf_counter() - started
    first, _ = epoch_seconds(alone)
    print(f"one after another: {alone_wall:.1f} s; epoch 1 of the slowest seed {first:.2f} s", flush=True)
    started = time.perf_counter()
    trainers, rngs = [], []
    for seed in seeds:
        t = trainer(config, seed, args.size, root / "fused", device)
        t.begin(train)
        trainers.append(t)
        rngs.append(RngSlot(device))
    fused = FusedGroup(trainers, rngs, [None] * len(seeds), [None] * len(seeds)).fit(train, val)
    sync(device)
    fused_wall = time.perf_counter() - started
    _, f_rest = epoch_seconds(fused)
    summed = sum(r["seconds"] for f in alone for r in f.history[1:]) / max(1, args.epochs - 1)
    print(f"fused: {fused_wall:.1f} s ({alone_wall / fused_wall:.2f}x); seconds per epoch after the first: "
          f"all seeds one after another {summed:.2f}, fused {f_rest:.2f} ({summed / f_rest:.2f}x)", flush=True)
    gap = max(abs(a[k] - b[k]) for fa, fb in zip(fused, alone, strict=True)
              for a, b in zip(fa.history, fb.history, strict=True) for k in ("train_loss", "val_loss"))
    print(f"largest |loss difference|, fused vs alone, any seed and epoch: {gap:.2e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
