"""Figures from histories: per-run curves and per-comparison overlays. Reads data, writes PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import stats as st  # noqa: E402

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


def _stack(histories: Sequence[History], key: str) -> np.ndarray:
    """(seeds, epochs) for the epochs every non-empty history has."""
    histories = [h for h in histories if h]
    length = min(len(h) for h in histories)
    return np.array([[float(row[key]) for row in h[:length]] for h in histories])


def _mean_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean over seeds and the half-width of its t-based 95% interval (None for one seed)."""
    mean = values.mean(axis=0)
    if len(values) < 2:
        return mean, None
    half = st.t.ppf(0.975, len(values) - 1) * values.std(axis=0, ddof=1) / np.sqrt(len(values))
    return mean, half


def overlay(path: Path, curves: dict[str, Sequence[History]], title: str, note: str = "") -> None:
    """Every trial of a comparison on one figure: validation (solid, with a 95% band over seeds) and train (dotted)."""
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, (label, histories) in enumerate(curves.items()):
        if not any(histories):
            continue
        colour = f"C{index % 10}"
        epochs = _stack(histories, "epoch")[0]
        for axis, metric in ((acc, "acc"), (loss, "loss")):
            mean, half = _mean_band(_stack(histories, f"val_{metric}"))
            axis.plot(epochs, mean, "-", color=colour, label=f"{label} (val)")
            if half is not None:
                axis.fill_between(epochs, mean - half, mean + half, color=colour, alpha=0.15, linewidth=0)
            axis.plot(epochs, _stack(histories, f"train_{metric}").mean(axis=0), ":", color=colour, alpha=0.7)
    _finish(fig, acc, loss, title, note + ("; " if note else "") + "dotted: train")
    atomic.save_figure(path, fig, dpi=110)
    plt.close(fig)


def outcome_strips(path: Path, outcomes: dict[str, dict[str, list[float]]], title: str, note: str = "") -> None:
    """Per outcome, a box per level with every seed as a dot."""
    count = len(outcomes)
    columns = min(3, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False)
    rng = np.random.default_rng(0)
    for axis, (label, levels) in zip(axes.flat, outcomes.items()):
        names = list(levels)
        axis.boxplot([levels[n] if levels[n] else [np.nan] for n in names], widths=0.5, showfliers=False,
                     medianprops={"color": "black"})
        for i, name in enumerate(names, 1):
            axis.scatter(i + rng.uniform(-0.12, 0.12, len(levels[name])), levels[name], s=16, color=f"C{i - 1}",
                         zorder=3)
        axis.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right", fontsize=8)
        axis.set_title(label, fontsize=9)
        axis.grid(alpha=0.3, axis="y")
    for axis in list(axes.flat)[count:]:
        axis.axis("off")
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
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
