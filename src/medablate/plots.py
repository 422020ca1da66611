"""Figures from histories: per-run curves and per-comparison overlays. Reads data, writes PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from medablate import atomic  # noqa: E402

History = Sequence[dict[str, float]]


def _column(history: History, key: str) -> list[float]:
    return [float(row[key]) for row in history]


def run_curves(path: Path, history: History, title: str, note: str = "") -> None:
    """Accuracy and loss, train and validation, two panels (the course's per-run figure)."""
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = _column(history, "epoch")
    for split, style in (("train", "-"), ("val", "--")):
        acc.plot(epochs, _column(history, f"{split}_acc"), style, label=split)
        loss.plot(epochs, _column(history, f"{split}_loss"), style, label=split)
    _finish(fig, acc, loss, title, note)
    atomic.save_figure(path, fig, dpi=110)
    plt.close(fig)


def overlay(path: Path, curves: dict[str, History], title: str, note: str = "") -> None:
    """Every trial of a comparison on one figure: validation (solid) and train (dotted), per trial one colour."""
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, (label, history) in enumerate(curves.items()):
        if not history:
            continue
        colour = f"C{index % 10}"
        epochs = _column(history, "epoch")
        acc.plot(epochs, _column(history, "val_acc"), "-", color=colour, label=f"{label} (val)")
        acc.plot(epochs, _column(history, "train_acc"), ":", color=colour, alpha=0.7)
        loss.plot(epochs, _column(history, "val_loss"), "-", color=colour, label=f"{label} (val)")
        loss.plot(epochs, _column(history, "train_loss"), ":", color=colour, alpha=0.7)
    _finish(fig, acc, loss, title, note + ("; " if note else "") + "dotted: train")
    atomic.save_figure(path, fig, dpi=110)
    plt.close(fig)


def _finish(fig, acc, loss, title: str, note: str) -> None:  # type: ignore[no-untyped-def]
    acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    for axis in (acc, loss):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
