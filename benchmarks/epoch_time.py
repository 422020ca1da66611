"""Seconds per epoch: the course notebook's training loop vs medablate's, on the same trial and data.

    python benchmarks/epoch_time.py                 # phantom data, 1000 images per class at 256x256
    python benchmarks/epoch_time.py --data DIR      # DIR holds the course's normal.npy and pneumonia.npy

Both train the course MLP (512/256/256, dropout 0.9/0.9/0.8, BatchNorm, ReLU) with BCEWithLogitsLoss, Adam
1e-3, batch 32 and a per-epoch cosine schedule on the course split (800 per class train, the rest
validation), from the same seed. Each runs in its own process, so peak memory is its own. medablate's
seconds are wall time per epoch including its checkpoint writes (last.pt every epoch, best.pt on
improvement); the notebook loop writes nothing. A third run
trains medablate with Adam's default (non-fused) kernel and the notebook's validation batch size: the
arithmetic is then the notebook's, and its losses must match the notebook's bit for bit.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEED = 0
DEVICE = torch.device("cpu")  # --device: cuda on a GPU machine (benchmarks/gpu_check.sh)


def load_arrays(data: str | None, per_class: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from medablate.data.sources import npy_pair, phantom
    from medablate.data.split import TRAIN

    images = npy_pair.load(Path(data), npy_pair.DEFAULT_FILES, 256) if data else phantom.generate(per_class, 256, 0)
    train_per_class = int(0.8 * min(images.counts().values()))
    from medablate.config.schema import SplitConfig
    from medablate.data.split import make_split

    split = make_split(images, SplitConfig(method="course", train_per_class=train_per_class))
    train = split == TRAIN
    return images.images[train], images.labels[train], images.images[~train], images.labels[~train]


def notebook(arrays, epochs: int) -> dict:  # type: ignore[no-untyped-def]
    """The course notebook's loop, as written there: float32 TensorDataset, DataLoader, nn.Linear, default Adam."""
    from torch.utils.data import DataLoader, TensorDataset

    x_train, y_train, x_val, y_val = arrays
    train_ds = TensorDataset(torch.tensor(x_train, dtype=torch.float32) / 255, torch.tensor(y_train, dtype=torch.float32))
    val_ds = TensorDataset(torch.tensor(x_val, dtype=torch.float32) / 255, torch.tensor(y_val, dtype=torch.float32))
    torch.manual_seed(SEED)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(256 * 256, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.9),
        nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.9),
        nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.8),
        nn.Linear(256, 1))
    model.to(DEVICE)
    train_loader = DataLoader(train_ds, batch_size=32, shuffle=True)
    val_loader = DataLoader(val_ds, batch_size=32, shuffle=False)
    criterion = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    rows = []
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        running_loss, correct, total = 0.0, 0, 0
        for images, labels in train_loader:
            images, labels = images.to(DEVICE), labels.to(DEVICE)
            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels.unsqueeze(1))
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * images.size(0)
            correct += ((torch.sigmoid(outputs) > 0.5).float().squeeze(1) == labels).sum().item()
            total += labels.size(0)
        scheduler.step()
        model.eval()
        val_loss, val_correct = 0.0, 0
        with torch.no_grad():
            for images, labels in val_loader:
                images, labels = images.to(DEVICE), labels.to(DEVICE)
                outputs = model(images)
                val_loss += criterion(outputs, labels.unsqueeze(1)).item() * images.size(0)
                val_correct += ((torch.sigmoid(outputs) > 0.5).float().squeeze(1) == labels).sum().item()
        rows.append({"train_loss": running_loss / total, "train_acc": correct / total,
                     "val_loss": val_loss / len(val_ds), "val_acc": val_correct / len(val_ds),
                     "seconds": time.perf_counter() - started})
    return {"rows": rows}


def medablate_run(arrays, epochs: int, exact: bool) -> dict:  # type: ignore[no-untyped-def]
    """medablate's Trainer on the same trial: uint8 data in memory, in-place gradients, fused Adam."""
    from medablate.config.schema import TrialConfig
    from medablate.train.engine import Split, Trainer, configure_threads
    from medablate.train.tasks import make_task

    configure_threads()
    optimizer = {"name": "Adam", "lr": 1e-3} | ({"foreach": True} if exact else {})
    config = TrialConfig.model_validate({"training": {
        "epochs": epochs, "optimizer": optimizer, "eval_batch_size": 32 if exact else 256,
        "scheduler": {"name": "CosineAnnealingLR", "interval": "epoch"}}})
    x_train, y_train, x_val, y_val = arrays
    device = DEVICE
    train, val = Split.from_numpy(x_train, y_train, device), Split.from_numpy(x_val, y_val, device)
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, make_task("BCEWithLogitsLoss", 2), SEED, (256, 256), ["normal", "pneumonia"],
                          Path(folder), device, -(-len(train) // 32))
        started = time.perf_counter()
        fit = trainer.fit(train, val, on_epoch=lambda row: ends.append(time.perf_counter()))
    # Wall time per epoch, from one epoch's end to the next: training, validation and the checkpoint
    # writes (best.pt, last.pt, history.csv) that the notebook loop does not do.
    walls = np.diff([started, *ends])
    return {"rows": [{**{k: r[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")}, "seconds": float(w)}
                     for r, w in zip(fit.history, walls)]}


def child(role: str, data: str | None, per_class: int, epochs: int) -> None:
    if DEVICE.type == "cuda":
        torch.backends.cudnn.benchmark = True
    arrays = load_arrays(data, per_class)
    result = notebook(arrays, epochs) if role == "notebook" else medablate_run(arrays, epochs, role == "exact")
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))


def spawn(role: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--role", role, "--epochs", str(args.epochs), "--per-class",
               str(args.per_class), "--device", args.device] + (["--data", args.data] if args.data else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def per_epoch(result: dict) -> float:
    """Median seconds per epoch, leaving out the first (warm-up) when there are more."""
    seconds = [r["seconds"] for r in result["rows"]]
    return float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def max_difference(a: dict, b: dict) -> float:
    return max(abs(x[k] - y[k]) for x, y in zip(a["rows"], b["rows"]) for k in ("train_loss", "val_loss"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with normal.npy and pneumonia.npy (default: phantom data)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per loop (default 5)")
    parser.add_argument("--per-class", type=int, default=1000, help="phantom images per class (default 1000)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--role", choices=["notebook", "medablate", "exact"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.role:
        child(args.role, args.data, args.per_class, args.epochs)
        return
    print(f"data: {args.data or f'phantom (synthetic), {args.per_class} per class, 256x256'}; {args.epochs} epochs; "
          f"torch {torch.__version__}; device {args.device}", flush=True)
    results = {}
    for role in ("notebook", "medablate", "exact"):  # each line as soon as its loop is done (a time limit keeps it)
        result = results[role] = spawn(role, args)
        seconds = [r["seconds"] for r in result["rows"]]
        print(f"{role:9s} {per_epoch(result):6.2f} s/epoch (median after the first; mean {np.mean(seconds):.2f}; "
              f"each: {' '.join(f'{s:.2f}' for s in seconds)})  peak {result['peak_rss_mib']:.0f} MiB  "
              f"threads {result['threads']}", flush=True)
    for role, result in results.items():
        print(f"{role:9s} train/val loss per epoch: "
              + " ".join(f"{r['train_loss']:.6f}/{r['val_loss']:.6f}" for r in result["rows"]))
    nb, fast, exact = results["notebook"], results["medablate"], results["exact"]
    print(f"ratio: {per_epoch(fast) / per_epoch(nb):.3f}")
    mean = lambda result: float(np.mean([r["seconds"] for r in result["rows"]]))  # noqa: E731
    print(f"ratio of means over all {args.epochs} epochs (first epochs pay for creating checkpoint files): "
          f"{mean(fast) / mean(nb):.3f}")
    print(f"losses, medablate (fused Adam) vs notebook: max |difference| {max_difference(fast, nb):.2e} "
          "(fused Adam rounds differently from the default kernel: float noise)")
    identical = all(x[k] == y[k] for x, y in zip(exact["rows"], nb["rows"])
                    for k in ("train_loss", "train_acc", "val_loss", "val_acc"))
    print(f"losses, medablate (default Adam, val batch 32) vs notebook: "
          f"{'bit-identical' if identical else f'max |difference| {max_difference(exact, nb):.2e}'}")


if __name__ == "__main__":
    main()
