"""Checkpoints that cost little to write every epoch.

A course-MLP last.pt (weights plus Adam's two moment buffers) is about 390 MiB. Writing it as a new
file every epoch (temp file, then rename) cost about 1.1 s per 3 s epoch here: the kernel allocates
and zero-fills fresh page-cache pages for each new file and frees the old ones. Overwriting an existing
file in place reuses its pages and costs about 0.25 s. So each checkpoint has two slot files beside it
(`.last.a.pt`, `.last.b.pt`) and `last.pt` is a relative symlink to the newest complete one: a save
overwrites the other slot, then swaps the link atomically (os.replace). A kill at any moment leaves
`last.pt` pointing at a whole file. Where symlinks are not available, it falls back to temp file + rename.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from medablate.core import atomic
from medablate.errors import UserError
from medablate.folder.claims import open_no_follow


def _slots(path: Path) -> tuple[Path, Path]:
    stem = path.name.removesuffix(".pt")
    return path.with_name(f".{stem}.a.pt"), path.with_name(f".{stem}.b.pt")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write state to path (a symlink to a slot file), so that path always names a complete checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first, second = _slots(path)
    current = os.readlink(path) if path.is_symlink() else None
    target = second if current == first.name else first
    if target.is_symlink() or (target.exists() and os.stat(target).st_nlink > 1):
        # a link (planted: it would point the write at another file) or a hard link shared with a backup
        # (cp -al, rsync --link-dest: writing in place would rewrite the backup too): write a fresh file
        target.unlink()
    with os.fdopen(open_no_follow(target, os.O_RDWR | os.O_CREAT), "r+b") as handle:
        torch.save(state, handle)
        handle.truncate()
    link = path.with_name(f".{path.name}.link.tmp")
    link.unlink(missing_ok=True)
    try:
        os.symlink(target.name, link)
    except (NotImplementedError, OSError):  # no symlinks here (some Windows setups, some network drives)
        target.unlink(missing_ok=True)
        atomic.torch_save(path, state)
        return
    os.replace(link, path)


def drop_stale_slot(path: Path) -> None:
    """Delete the slot that path does not point to: needed only while training, for the next in-place write."""
    path = Path(path)
    if path.is_symlink():
        current = os.readlink(path)
        for slot in _slots(path):
            if slot.name != current:
                slot.unlink(missing_ok=True)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return torch.load(Path(path), map_location=device, weights_only=True)


class DamagedCheckpoint(Exception):
    """A checkpoint file that cannot be read (truncated, overwritten, not a checkpoint)."""


def read_checkpoint(path: Path, device: torch.device | str = "cpu", need_model: bool = True) -> dict[str, Any]:
    """load_checkpoint, with every way a damaged file fails turned into DamagedCheckpoint. A finished run's last.pt
    may hold no weights (training.keep_checkpoints: best): need_model=False accepts it."""
    try:
        state = load_checkpoint(path, device)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch reports damage as RuntimeError, EOFError, UnpicklingError, OSError(EINVAL), ...
        raise DamagedCheckpoint(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(state, dict) or "meta" not in state or ("model" not in state and not state.get("finished")):
        raise DamagedCheckpoint(f"{path} is not a medablate checkpoint (no model weights or meta data in it)")
    if need_model and "model" not in state:
        raise DamagedCheckpoint(f"{path} holds no weights: the run finished with training.keep_checkpoints: best, "
                                "which keeps the weights in best.pt only (use --checkpoint best, or keep_checkpoints: "
                                "last or all in a study that needs the final weights)")
    return state


def older_slot(path: Path) -> Path | None:
    """The slot file that `path` does not point to: the previous complete checkpoint, when there is one."""
    path = Path(path)
    if not path.is_symlink():
        return None
    current = os.readlink(path)
    return next((s for s in _slots(path) if s.name != current and s.exists()), None)


def user_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """For evaluate and predict: a damaged file is a UserError that names it and says what to do."""
    try:
        return read_checkpoint(path, device)
    except DamagedCheckpoint as exc:
        raise UserError(f"{exc}. Rerun the study with the same command: the run is redone from its last good "
                        "state (or delete the run folder to retrain it).") from None
