"""Decode once: decoded, resized uint8 images cached on disk, keyed by the source files and preprocessing.

The key is a hash of every file's relative path, size and modification time plus the preprocessing
parameters, so the cache is reused across trials, studies and runs and rebuilt when a file changes.
Location: $MEDABLATE_CACHE, else $XDG_CACHE_HOME/medablate, else ~/.cache/medablate. Images are a plain
.npy (memory-mappable), the rest a small JSON beside it; both written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medablate.core import atomic
from medablate.data.types import ImageSet

FORMAT = 1


def cache_dir() -> Path:
    if os.environ.get("MEDABLATE_CACHE"):
        return Path(os.environ["MEDABLATE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medablate"


def source_key(root: Path, files: list[Path], parameters: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps({"format": FORMAT, **parameters}, sort_keys=True).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def cached(key: str, build: Callable[[], ImageSet]) -> ImageSet:
    """The ImageSet stored under key, or build it, store it and return it."""
    folder = cache_dir()
    images_path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if images_path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            images = np.load(images_path, mmap_mode="r")
            return ImageSet(np.array(images), np.asarray(meta["labels"], np.int64), meta["ids"], meta["class_names"],
                            meta["source"], synthetic=meta.get("synthetic", False), notes=meta.get("notes", []),
                            patients=meta.get("patients"))
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry: rebuild it
    data = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(images_path, _npy_bytes(data.images))
        atomic.write_json(meta_path, {"labels": data.labels.tolist(), "ids": data.ids, "class_names": data.class_names,
                                      "source": data.source, "notes": data.notes, "patients": data.patients,
                                      "synthetic": data.synthetic})
    except OSError:
        pass  # a read-only or full cache folder only costs the next run a decode
    return data


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
