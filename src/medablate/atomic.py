"""Atomic file writes: a temp file in the same folder, then os.replace.

A kill at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from medablate import faults


def _default_mode() -> int:
    """The permissions a plain open() would give a new file (mkstemp's are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_mode()


def _replace_with(path: Path, write: Any, mode: str, durable: bool = True) -> None:
    """Write through `write(handle)` into a temp file beside path, then rename it over path.

    durable=True also fsyncs, so the file survives a power cut; checkpoints skip it (fsync of a
    400 MiB last.pt costs about a second per epoch here) and are still whole after a killed process.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        faults.point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


HOST = socket.gethostname().replace("~", "_")


def temp_prefix(name: str) -> str:
    """`.<name>~<host>~<pid>~`: whose temp file it is, so a cleanup removes only those of dead processes."""
    return f".{name}~{HOST}~{os.getpid()}~"


def owner_alive(temp_name: str) -> bool:
    """Whether the process that made a temp file (see temp_prefix) may still be writing it."""
    parts = temp_name.split("~")
    if len(parts) < 4 or not parts[2].isdigit():
        return False  # an older medablate's temp file: nobody writes it any more
    if parts[1] != HOST:
        return True  # another machine's process: leave its files alone
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text(path: Path, text: str) -> None:
    _replace_with(Path(path), lambda h: h.write(text), "w")


def write_bytes(path: Path, data: bytes) -> None:
    _replace_with(Path(path), lambda h: h.write(data), "wb")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    write_text(path, buffer.getvalue())


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return csv_text(value)
    return value


def csv_text(text: str) -> str:
    """A text cell that a spreadsheet shows as text: a name starting with =, +, -, @ (a comparison named
    `=HYPERLINK(...)`, a file named `+cmd.png`) would run as a formula, so it gets a leading apostrophe (OWASP's
    advice). Numbers written as text (-0.5) stay as they are."""
    if text.startswith(FORMULA_STARTS):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def torch_save(path: Path, obj: Any) -> None:
    import torch  # here, not at the top: `medablate status` reads run folders without importing torch

    _replace_with(Path(path), lambda handle: torch.save(obj, handle), "wb", durable=False)


def save_figure(path: Path, fig: Any, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from the file suffix)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip("."), **kwargs)
    write_bytes(path, buffer.getvalue())
