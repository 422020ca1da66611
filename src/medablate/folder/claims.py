"""One process trains a run at a time: an exclusive, self-releasing claim on its folder.

A claim is `claim.lock` in the run folder, locked with flock(2) for as long as the run trains, and holding
who claimed it (host, pid, the process's start time, when) for people to read. The kernel drops the lock
when the process ends however it ends (SIGKILL, out of memory, a replaced container), so a claim can never
go stale: a run whose lock is free is free, whatever file is left behind. Several `medablate run`
processes on one --out (on one machine, or on machines sharing a filesystem with working locks, such as
NFSv4) therefore share a study: each takes the next run nobody holds. A pid alone cannot do this (pids
are reused and mean nothing on another host), which is why the old `running.json` marker is gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from medablate.errors import UserError
from medablate.folder.layout import CLAIM_LOCK, TRIALS
from medablate.folder.records import ClaimRecord

CLAIM = CLAIM_LOCK
LEGACY_MARKER = "running.json"  # written by medablate before claims; ignored and removed


@dataclass
class Claim:
    path: Path
    fd: int


def _process_start() -> float | None:
    """This process's start time (seconds since boot), which with host and pid names it uniquely."""
    try:
        fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that never follows a symbolic link at `path`: one planted there (in a study folder that others can
    write, a claim.lock or a checkpoint slot pointing at someone's file) is removed and a real file made instead,
    so the write cannot land in the link's target."""
    for _ in range(3):
        try:
            return os.open(path, flags | os.O_NOFOLLOW, mode)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            os.unlink(path)  # the link itself, never its target
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CREAT | os.O_EXCL, mode)


def try_claim(run_dir: Path) -> Claim | None:
    """Claim the run folder for this process, or None when another live process holds it."""
    run_dir = Path(run_dir)
    real_folder(run_dir)
    path = run_dir / CLAIM
    while True:
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the holder may have released (and removed) the file between our open and our lock: try again
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    owner = ClaimRecord(host=socket.gethostname(), pid=os.getpid(), process_start=_process_start(),
                        claimed=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner.plain()).encode(), 0)
    (run_dir / LEGACY_MARKER).unlink(missing_ok=True)
    return Claim(path, fd)


def release(claim: Claim) -> None:
    """Remove the claim file while still holding it, then drop the lock."""
    try:
        claim.path.unlink(missing_ok=True)
    finally:
        os.close(claim.fd)


def real_folder(folder: Path, parent: bool = True) -> Path:
    """Make `folder` (and its parents) and refuse when it is a symbolic link: a run folder planted as a link would
    have every file of the run written wherever it points."""
    folder = Path(folder)
    # the folder and, with parent, the one above it (a run folder and trials/; examples/ and its run folder); --out
    # itself is the user's choice and may be a link (e.g. to scratch space)
    for place in (folder.parent, folder)[0 if parent else 1:]:
        if place.is_symlink():
            raise UserError(f"{place} is a symbolic link (to {os.readlink(place)}), not a folder: medablate writes "
                            "only into real folders inside a study folder, so that nobody can redirect its writes. "
                            "Remove the link (its target is left as it is) and run the same command again.")
        if place.exists() and not place.is_dir():
            raise UserError(f"{place} is a file, not a folder: a study folder keeps its runs in {TRIALS}/<run>/. Move "
                            "the file away (or use another --out) and run the same command again.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def holder(run_dir: Path) -> ClaimRecord | None:
    """Who holds the run's claim right now (None when nobody does; a file left by a dead process is no claim; an
    unreadable one is held by somebody unknown)."""
    path = Path(run_dir) / CLAIM
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return ClaimRecord.model_validate(json.loads(os.pread(fd, 4096, 0) or b"{}"))
        except ValueError:
            return ClaimRecord()
    finally:
        os.close(fd)
    return None
