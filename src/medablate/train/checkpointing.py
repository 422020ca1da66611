"""A run's checkpoints as one object (Lightning's ModelCheckpoint is the model): which epoch is best, when last.pt
is due, what each file holds and in which order they are written. The training loop asks it; it never names a
file.

best.pt holds the best epoch by `training.monitor` (val_loss: lowest; val_acc, val_auc, ...: highest); last.pt holds everything a
resume needs (model, optimizer, scheduler, scaler, RNG, history and this policy's own state), written when due
(`training.checkpoint_every`) and always after best.pt, so a last.pt on disk never records a best epoch whose weights
are missing. Both are A/B slot files behind a link (medablate.folder.checkpoint), so a kill at any moment leaves a
whole file. A finished run keeps what `training.keep_checkpoints` says.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medablate.core import atomic
from medablate.folder import layout
from medablate.folder.checkpoint import (
    DamagedCheckpoint,
    drop_stale_slot,
    load_checkpoint,
    older_slot,
    read_checkpoint,
    save_checkpoint,
)
from medablate.folder.records import HISTORY_COLUMNS, HistoryRow

State = dict[str, Any]


def is_better(value: float, best: float | None, monitor: str, min_delta: float = 0.0) -> bool:
    """A loss is better lower, any other validation metric higher (by more than min_delta); an undefined best (an
    AUC on one class) is beaten by any value, an undefined value beats no defined best."""
    if best is None or not math.isfinite(best):
        return True
    return value < best - min_delta if monitor.endswith("loss") else value > best + min_delta


def epochs_without_improvement(values: list[float], monitor: str, min_delta: float) -> int:
    """How many of the last values came after the best so far without beating it by more than min_delta (a loss
    lower, anything else higher); an undefined value (an AUC on one class) is never an improvement, and any value
    beats an undefined best."""
    best: float | None = None
    since = 0
    for value in values:
        best, since = (value, 0) if is_better(value, best, monitor, min_delta) else (best, since + 1)
    return since


class CheckpointPolicy:
    BEST, LAST, HISTORY = layout.BEST_PT, layout.LAST_PT, layout.HISTORY_CSV
    AUTO_SECONDS = 60.0  # checkpoint_every: auto writes last.pt once this much time has passed since the last one
    # what a finished run's last.pt leaves out, by training.keep_checkpoints
    FINAL_DROPS = {"best": ("model", "optimizer", "scheduler", "rng", "ema"), "last": ("optimizer", "scheduler", "rng", "ema"),
                   "all": ()}

    def __init__(self, run_dir: Path, monitor: str, every: str | int, keep: str, device: torch.device) -> None:
        self.run_dir, self.monitor, self.every, self.keep, self.device = Path(run_dir), monitor, every, keep, device
        self.best: dict[str, Any] = {}  # epoch, val_loss, val_acc of the best epoch; best_val_acc(_epoch) at any
        self.best_weights: State | None = None  # the best epoch's weights, kept in memory
        self.best_saved = True  # whether best.pt holds best_weights
        self.saved_at = time.monotonic()  # when last.pt was last written
        self.notes: list[str] = []  # what restoring had to repair

    # -------------------------------------------------------------- its own state, as last.pt records it

    def state_dict(self) -> dict[str, Any]:
        return dict(self.best)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = dict(state)

    # -------------------------------------------------------------- during training

    def update(self, row: HistoryRow, weights: Callable[[], State]) -> bool:
        """Record an epoch; True when it is the new best by the monitored value (its weights are kept then)."""
        improved = is_better(row[self.monitor], self.best.get(self.monitor), self.monitor)
        if improved:
            self.best.update({"epoch": int(row["epoch"]), "val_loss": row["val_loss"], "val_acc": row["val_acc"],
                              self.monitor: row[self.monitor]})
            self.best_weights = {k: v.detach().clone() for k, v in weights().items()}
            self.best_saved = False
        if row["val_acc"] > self.best.get("best_val_acc", -1.0):
            self.best.update(best_val_acc=row["val_acc"], best_val_acc_epoch=int(row["epoch"]))
        return improved

    def due(self, epoch: int) -> bool:
        """Whether this epoch ends with a full last.pt (training.checkpoint_every)."""
        if self.every == "epoch":
            return True
        if self.every == "auto":
            return time.monotonic() - self.saved_at >= self.AUTO_SECONDS
        return epoch % int(self.every) == 0

    def save_best(self, meta: dict[str, Any]) -> None:
        """best.pt, when the weights in memory are newer than it."""
        if self.best_weights is not None and not self.best_saved:
            save_checkpoint(self.run_dir / self.BEST, {"meta": meta, "epoch": int(self.best["epoch"]),
                                                       "val_loss": self.best["val_loss"],
                                                       "val_acc": self.best["val_acc"], "model": self.best_weights})
            self.best_saved = True

    def save_last(self, meta: dict[str, Any], state: State) -> None:
        """best.pt (when newer), then last.pt: resume needs both, so last.pt is written last."""
        self.save_best(meta)
        save_checkpoint(self.run_dir / self.LAST, state)
        self.saved_at = time.monotonic()

    def checkpoint(self, epoch: int, meta: dict[str, Any], state: Callable[[], State], due: bool | None = None) -> bool:
        """At the end of an epoch, when due (or when `due` says so: a fused group's seeds checkpoint together): best.pt
        then last.pt. A resume from an older last.pt replays the same epochs and finds the same best."""
        if not (self.due(epoch) if due is None else due):
            return False
        self.save_last(meta, state())
        return True

    def final_state(self, state: State) -> State:
        """What a finished run's last.pt keeps (training.keep_checkpoints), its weights copied (evaluation loads
        best.pt's into the model next)."""
        kept = {k: v for k, v in state.items() if k not in self.FINAL_DROPS[self.keep]}
        if "model" in kept:
            kept["model"] = {k: v.detach().clone() for k, v in kept["model"].items()}
        return kept | {"finished": True}

    def write_final(self, meta: dict[str, Any], state: State) -> None:
        """The finished run's files: best.pt, then last.pt, then the spare slot files go."""
        self.save_best(meta)  # before the final last.pt: a finished last.pt means best.pt is final too
        save_checkpoint(self.run_dir / self.LAST, state)
        for name in (self.LAST, self.BEST):
            drop_stale_slot(self.run_dir / name)

    def write_history(self, rows: list[HistoryRow]) -> None:
        atomic.write_csv(self.run_dir / self.HISTORY, rows, HISTORY_COLUMNS)

    # -------------------------------------------------------------- resuming

    def last_good_state(self) -> State | None:
        """last.pt, else the older slot when last.pt is damaged, else None (the run starts over), with a note."""
        path = self.run_dir / self.LAST
        if not path.exists():
            return None
        try:
            return read_checkpoint(path, self.device, need_model=False)
        except DamagedCheckpoint as exc:
            older = older_slot(path)
            try:
                state = read_checkpoint(older, self.device, need_model=False) if older is not None else None
            except DamagedCheckpoint:
                state = None
            where = f"the previous checkpoint (epoch {state['epoch']})" if state else "the first epoch"
            self.notes.append(f"{exc}; resuming from {where}")
            return state

    def restore_best(self) -> bool:
        """best.pt into memory after a resume, when it is the best epoch that last.pt records; a best.pt from a
        later epoch (a kill after best.pt, before last.pt) is simply found again by the replayed epochs. False when
        the best epoch's weights are lost (best.pt missing or damaged): the run must start over, with a note."""
        if "epoch" not in self.best:
            return True
        try:
            state = read_checkpoint(self.run_dir / self.BEST, self.device)
        except (DamagedCheckpoint, FileNotFoundError):
            state = None
        if state is not None and int(state["epoch"]) == int(self.best["epoch"]):
            self.best_weights = state["model"]
            return True
        if state is not None and int(state["epoch"]) > int(self.best["epoch"]):
            return True
        self.notes.append(f"{self.run_dir / self.BEST} is missing or damaged, so the weights of the best epoch "
                          f"({self.best['epoch']}) are lost: the run is trained again from the start (same numbers)")
        self.best = {}
        return False

    def best_model(self) -> tuple[State, int]:
        """The best epoch's weights and number (from memory; best.pt only when memory has none)."""
        if self.best_weights is None:
            state = load_checkpoint(self.run_dir / self.BEST, self.device)
            self.best_weights, self.best["epoch"] = state["model"], int(state["epoch"])
        return self.best_weights, int(self.best["epoch"])

    def has_best(self) -> bool:
        return self.best_weights is not None or (self.run_dir / self.BEST).exists()
