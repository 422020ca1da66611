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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medablate.core import faults
from medablate.core.children import stat_fields


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


def owner_alive(temp_name: str, path: Path | None = None) -> bool:
    """Whether the process that made a temp file (see temp_prefix) may still be writing it (given the file's path,
    a process that only got the writer's pid later, after pids wrapped, is told apart by its start time)."""
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
    return not _not_the_writer(int(parts[2]), path)


def _not_the_writer(pid: int, path: Path | None) -> bool:
    """On Linux: the pid is a zombie (a killed helper whose parent died too, before init reaps it) or a process that
    started after the temp file was last written, so it cannot have written it. False where /proc does not say."""
    fields = stat_fields(pid)
    if fields is None or path is None:
        return fields is not None and fields[0] == "Z"
    if fields[0] == "Z":
        return True
    try:
        started = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return started > path.stat().st_mtime + 2.0  # btime has whole seconds
    except (OSError, ValueError, IndexError, StopIteration):
        return False


def _boot_time() -> float:
    with open("/proc/stat") as handle:
        return float(next(line.split()[1] for line in handle if line.startswith("btime ")))


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
