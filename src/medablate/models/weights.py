"""Start a network from a state dict file (`model.weights`), partially: what fits is loaded, the rest is said.

Accepted files: a plain state dict, or one nested under `state_dict` / `model` (a medablate best.pt, a Lightning
checkpoint); `module.` (DataParallel) and `_orig_mod.` (torch.compile) prefixes are stripped. An RGB first
convolution is folded to a grey one by summing over its input channels; a tensor whose shape differs (a head
with another number of classes) keeps the network's fresh initialisation. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medablate.errors import UserError

PREFIXES = ("module.", "_orig_mod.", "net.", "model.")


@dataclass
class WeightsReport:
    path: str
    sha256: str
    loaded: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)  # RGB first convolution summed to the data's channels
    reshaped: list[str] = field(default_factory=list)  # shape differs: re-initialised
    missing: list[str] = field(default_factory=list)  # in the network, not in the file: initialised
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the network: ignored

    def summary(self) -> str:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")

        parts = [f"loaded {len(self.loaded)} tensors from {self.path} (sha256 {self.sha256[:12]})"]
        for label, keys in (("folded RGB to the data's channels", self.folded),
                            ("re-initialised, shape differs", self.reshaped),
                            ("missing from the file, initialised", self.missing),
                            ("unexpected, ignored", self.unexpected)):
            if keys:
                parts.append(f"{label}: {len(keys)} ({some(keys)})")
        return "weights: " + "; ".join(parts)


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    stat = _existing(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def _existing(path: Path) -> Path:
    if not Path(path).is_file():
        raise UserError(f"model.weights {path} does not exist: set it to a state dict file (.pt / .pth) or remove "
                        "the key to train from scratch.")
    return Path(path)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unnested."""
    _existing(path)
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or pickled-object file
        raise UserError(f"model.weights {path} could not be read as a PyTorch state dict ({type(exc).__name__}: "
                        f"{str(exc).split('. ')[0][:120]}): it is no file torch.save wrote; save the weights with "
                        "torch.save(model.state_dict(), path).") from None
    for key in ("state_dict", "model"):
        while isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise UserError(f"model.weights {path} holds no tensors: expected a state dict (name -> tensor), plain or "
                        "under 'state_dict' / 'model'.")
    return tensors


def _strip(state: dict[str, torch.Tensor], target: set[str]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes while that matches more of the network's keys."""
    best = state
    while True:
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in best):
                candidate = {k.removeprefix(prefix): v for k, v in best.items()}
                if len(target & set(candidate)) >= len(target & set(best)):
                    best = candidate
                    break
        else:
            return best


def load_weights(net: nn.Module, path: Path) -> WeightsReport:
    """Load what fits of the file into net (in place); the report says what was loaded, folded and left."""
    own = net.state_dict()
    state = _strip(read_state(path), set(own))
    report = WeightsReport(str(path), sha256(path))
    merged = dict(own)
    for key, mine in own.items():
        theirs = state.get(key)
        if theirs is None:
            report.missing.append(key)
        elif theirs.shape == mine.shape:
            merged[key] = theirs.to(mine.dtype)
            report.loaded.append(key)
        elif _foldable(theirs, mine):
            merged[key] = theirs.sum(dim=1, keepdim=True).to(mine.dtype)
            report.folded.append(key)
            report.loaded.append(key)
        else:
            report.reshaped.append(f"{key} {list(theirs.shape)} -> {list(mine.shape)}")
    report.unexpected = [k for k in state if k not in own]
    if not report.loaded:
        raise UserError(f"model.weights {path} shares no tensor with this network ({len(state)} tensors, e.g. "
                        f"{next(iter(state))}; the network's first is {next(iter(own))}): is it the weights of "
                        "another architecture?")
    net.load_state_dict(merged)
    return report


def _foldable(theirs: torch.Tensor, mine: torch.Tensor) -> bool:
    """An RGB convolution (out, 3, k, k) for a grey network's (out, 1, k, k)."""
    return theirs.dim() == mine.dim() >= 3 and theirs.shape[1] == 3 and mine.shape[1] == 1 \
        and theirs.shape[0] == mine.shape[0] and theirs.shape[2:] == mine.shape[2:]
