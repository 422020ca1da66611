"""Figures from histories: per-run curves and per-comparison overlays. Reads data, writes PNGs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import stats as st  # noqa: E402

from medablate.core import atomic, children  # noqa: E402
from medablate.core.children import Mapper, Pending, in_turn  # noqa: E402
from medablate.errors import UserError  # noqa: E402

History = Sequence[dict[str, float]]


FORMATS = (".png", ".pdf", ".svg")
FORMATS_VARIABLE = "MEDABLATE_FIGURE_FORMATS"  # e.g. "png": the study's figures without their PDF and SVG copies


def figure_formats() -> tuple[str, ...]:
    """The formats of a study's figures: PNG, PDF and SVG (for papers), or those $MEDABLATE_FIGURE_FORMATS names.
    PNG is always written (report.md shows it). Each format draws the figure again: PNG alone takes a third of
    the time, and report.html then embeds the PNG."""
    asked = os.environ.get(FORMATS_VARIABLE, "").strip()
    if not asked:
        return FORMATS
    found = {f".{part.strip().lower().lstrip('.')}" for part in asked.split(",") if part.strip()}
    unknown = sorted(found - set(FORMATS))
    if unknown:
        raise UserError(f"${FORMATS_VARIABLE} is {asked!r}: {', '.join(unknown)} is not a figure format; use png, pdf "
                        "and svg, separated by commas (png is always written), or unset it for all three.")
    return tuple(f for f in FORMATS if f in found or f == ".png")


def save(fig, path: Path) -> None:
    """Save and close a figure: at path, or as path.png, .pdf and .svg when path has no such suffix (for papers;
    see figure_formats). A copy in a format not written this time is removed, so none is left stale."""
    path = Path(path)
    formats = figure_formats()
    targets = [path] if path.suffix in FORMATS else [path.with_name(path.name + f) for f in formats]
    for target in targets:
        atomic.save_figure(target, fig, dpi=110, metadata={"Date": None} if target.suffix == ".svg" else None)
    if path.suffix not in FORMATS:
        for suffix in set(FORMATS) - set(formats):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    plt.close(fig)


class Drawings(list[tuple[Any, tuple[Any, ...]]]):
    """Figures decided now and drawn together: one after another, or (a study with spare cores) by its helper
    processes at once. Each is a plots function and its arguments, all picklable."""

    def add(self, function: Any, *args: Any) -> None:
        self.append((function, args))

    def draw(self, mapper: Mapper = in_turn) -> None:
        """Draw them all (the slowest first, so a pool ends sooner), then forget them."""
        self.start(mapper)()

    def start(self, mapper: Mapper = in_turn) -> Pending:
        """Begin drawing them all (at once where mapper has processes) and forget them; returns what waits for the
        drawings to be written."""
        pending = children.start(mapper, _draw_one, sorted(self, key=lambda job: job[0] is not outcome_strips))
        self.clear()
        return pending


def _draw_one(job: tuple[Any, tuple[Any, ...]]) -> None:
    function, args = job
    function(*args)


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
    save(fig, path)


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


def band_limits(mean: np.ndarray, half: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """A band clipped to the metric's range: an accuracy stays inside [0, 1], a loss above 0."""
    return np.clip(mean - half, 0, None), np.clip(mean + half, None, 1 if metric == "acc" else None)


def overlay(path: Path, curves: Mapping[str, Sequence[History]], title: str, note: str = "") -> None:
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
                axis.fill_between(epochs, *band_limits(mean, half, metric), color=colour, alpha=0.15, linewidth=0)
            axis.plot(epochs, _stack(histories, f"train_{metric}").mean(axis=0), ":", color=colour, alpha=0.7)
    _finish(fig, acc, loss, title, note + ("; " if note else "") + "dotted: train")
    save(fig, path)


def outcome_strips(path: Path, outcomes: dict[str, dict[str, list[float]]], title: str, note: str = "") -> None:
    """Per outcome, a box per level with every seed as a dot."""
    count = len(outcomes)
    columns = min(3, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False)
    rng = np.random.default_rng(0)
    for axis, (label, levels) in zip(axes.flat, outcomes.items(), strict=False):
        names = list(levels)
        axis.boxplot([levels[n] if levels[n] else [np.nan] for n in names], widths=0.5, showfliers=False,
                     medianprops={"color": "black"})
        for i, name in enumerate(names, 1):
            axis.scatter(i + rng.uniform(-0.12, 0.12, len(levels[name])), levels[name], s=16, color=f"C{i - 1}",
                         zorder=3)
        axis.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right", fontsize=8)
        axis.set_title(label, fontsize=9, y=1.0)
        axis.grid(alpha=0.3, axis="y")
    for axis in list(axes.flat)[count:]:
        axis.axis("off")
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    save(fig, path)


def _finish(fig, acc, loss, title: str, note: str) -> None:
    acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    for axis in (acc, loss):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:  # no finished run has a curve yet: no legend, no warning
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "no finished epochs yet", ha="center", va="center", transform=axis.transAxes)
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()


# ---------------------------------------------------------------- clinical figures of one trial


def roc_pr(path_roc: Path, path_pr: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]],
           threshold: float | None, title: str, note: str = "") -> None:
    """ROC and precision-recall curves per split, with the operating point at the chosen threshold marked."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    for path, kind in ((path_roc, "roc"), (path_pr, "pr")):
        fig, axis = plt.subplots(figsize=(5.2, 4.8))
        for index, (split, (labels, positive)) in enumerate(curves.items()):
            if len(np.unique(labels)) < 2:
                continue
            colour = f"C{index}"
            if kind == "roc":
                fpr, tpr, _ = roc_curve(labels, positive)
                axis.plot(fpr, tpr, color=colour, label=split)
            else:
                precision, recall, _ = precision_recall_curve(labels, positive)
                axis.plot(recall, precision, color=colour, label=split)
            if threshold is not None:
                decided = positive >= threshold
                sensitivity = decided[labels == 1].mean()
                x = 1 - (~decided[labels == 0]).mean() if kind == "roc" else sensitivity
                y = sensitivity if kind == "roc" else (labels[decided] == 1).mean() if decided.any() else 1.0
                axis.plot([x], [y], "o", color=colour, markersize=7,
                          label=f"{split} at threshold {threshold:.3g}")
        if kind == "roc":
            axis.plot([0, 1], [0, 1], ":", color="grey")
            axis.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity", title="ROC")
        else:
            axis.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right" if kind == "roc" else "lower left")
        fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=9)
        fig.tight_layout()
        save(fig, path)


def confusion(path: Path, matrix: list[list[int]], class_names: list[str], title: str, note: str = "") -> None:
    fig, axis = plt.subplots(figsize=(4.2, 3.8))
    values = np.asarray(matrix)
    axis.imshow(values, cmap="Blues")
    for (i, j), count in np.ndenumerate(values):
        axis.text(j, i, str(count), ha="center", va="center",
                  color="white" if count > values.max() / 2 else "black")
    axis.set_xticks(range(len(class_names)), class_names)
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set(xlabel="predicted", ylabel="true")
    axis.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
    fig.tight_layout()
    save(fig, path)


def reliability(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, bins: int = 10,
                note: str = "") -> None:
    """Observed frequency of the positive class per bin of predicted probability."""
    fig, axis = plt.subplots(figsize=(5, 4.6))
    edges = np.linspace(0, 1, bins + 1)
    for index, (split, (labels, positive)) in enumerate(curves.items()):
        which = np.minimum((positive * bins).astype(int), bins - 1)
        filled = [b for b in range(bins) if (which == b).any()]
        axis.plot([positive[which == b].mean() for b in filled], [labels[which == b].mean() for b in filled],
                  "o-", color=f"C{index}", label=split)
    axis.plot(edges[[0, -1]], edges[[0, -1]], ":", color="grey", label="perfectly calibrated")
    axis.set(xlabel="predicted probability of the positive class", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    axis.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def roc_overlay(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, note: str = "") -> None:
    """One ROC curve per level of a comparison (AUC in the legend)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, axis = plt.subplots(figsize=(5.6, 5))
    for index, (label, (labels, positive)) in enumerate(curves.items()):
        if len(np.unique(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, positive)
        axis.plot(fpr, tpr, color=f"C{index}", label=f"{label} (AUC {roc_auc_score(labels, positive):.3f})")
    axis.plot([0, 1], [0, 1], ":", color="grey")
    axis.set(xlabel="1 - specificity", ylabel="sensitivity")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=9)
    fig.tight_layout()
    save(fig, path)


def roc_band(path: Path, per_split: dict[str, list[tuple[np.ndarray, np.ndarray]]], title: str,
             references: Sequence[tuple[str, float, float]] = (), note: str = "") -> None:  # noqa: D417
    """Per split, every seed's ROC interpolated on one false-positive grid: the mean curve with a 95% band over
    seeds (clipped to [0, 1]); published references as points at (1 - specificity, sensitivity)."""
    from sklearn.metrics import roc_curve

    grid = np.linspace(0, 1, 201)
    fig, axis = plt.subplots(figsize=(5.6, 5))
    for index, (split, curves) in enumerate(per_split.items()):
        rows = []
        for labels, positive in curves:
            if len(np.unique(labels)) == 2:
                fpr, tpr, _ = roc_curve(labels, positive)
                rows.append(np.interp(grid, fpr, tpr))
        if not rows:
            continue
        mean, half = _mean_band(np.array(rows))
        axis.plot(grid, mean, color=f"C{index}", label=f"{split} ({len(rows)} seed{'s' if len(rows) > 1 else ''})")
        if half is not None:
            axis.fill_between(grid, *band_limits(mean, half, "acc"), color=f"C{index}", alpha=0.15, linewidth=0)
    for index, (name, sensitivity, specificity) in enumerate(references):
        axis.plot([1 - specificity], [sensitivity], marker="*^sDP"[index % 5], markersize=10, linestyle="none",
                  color="black", label=f"{name} (published)")
    axis.plot([0, 1], [0, 1], ":", color="grey")
    axis.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=9)
    fig.tight_layout()
    save(fig, path)


PANEL_ROWS = (("accuracy", "accuracy"), ("roc_auc", "ROC AUC"), ("sensitivity", "sensitivity (solid), specificity "
                                                                                "(dashed)"))


def robustness(path: Path, levels: Mapping[str, Sequence[Mapping[str, Any]]], title: str, note: str = "") -> None:
    """The robustness panel of a comparison: a column per shift, metric against severity (0: the clean images),
    a line per level (mean over seeds, 95% band); the last row shows the threshold's sensitivity and specificity."""
    shifts = list(dict.fromkeys(str(r["shift"]) for rows in levels.values() for r in rows if r["shift"] != "clean"))
    fig, axes = plt.subplots(len(PANEL_ROWS), max(1, len(shifts)), figsize=(1.9 * max(1, len(shifts)) + 1, 6.4),
                             squeeze=False, sharey="row", sharex=True)
    for column, shift in enumerate(shifts):
        for colour, (level, rows) in enumerate(levels.items()):
            own = [r for r in rows if r["shift"] == shift]
            clean = [r for r in rows if r["shift"] == "clean" and all(float(o["severity"]) > 0 for o in own)]
            curve = sorted(own + clean, key=lambda r: float(r["severity"]))
            x = [float(r["severity"]) for r in curve]
            for row, (metric, _) in enumerate(PANEL_ROWS):
                for key, style in [(metric, "-")] + ([("specificity", "--")] if metric == "sensitivity" else []):
                    _band(axes[row, column], x, curve, key, style, f"C{colour}",
                          level if (row, column, key) == (0, 0, "accuracy") else None)
        axes[0, column].set_title(shift, fontsize=8)
        axes[-1, column].set_xlabel("severity", fontsize=8)
    for row, (_, label) in enumerate(PANEL_ROWS):
        axes[row, 0].set_ylabel(label, fontsize=8)
    for axis in axes.flat:
        axis.grid(alpha=0.3)
        axis.tick_params(labelsize=7)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if axes[0, 0].get_legend_handles_labels()[0]:
        fig.legend(loc="lower center", ncol=min(4, len(levels)), fontsize=8, frameon=False)
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, path)


def _band(axis, x: list[float], rows: Sequence[Mapping[str, Any]], key: str, style: str, colour: str,
          label: str | None) -> None:
    mean = np.array([_float(r.get(f"{key}_mean")) for r in rows])
    low, high = (np.array([_float(r.get(f"{key}_{s}")) for r in rows]) for s in ("ci_low", "ci_high"))
    axis.plot(x, mean, style, color=colour, marker="o", markersize=2.5, linewidth=1.2, label=label)
    if np.isfinite(low).any():
        axis.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
