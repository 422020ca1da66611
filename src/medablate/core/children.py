"""Child processes that die with their parent, and pools that stop at once when their parent stops.

A study's worker processes, figure processes and decoding processes are helpers: without their parent their work
is lost anyway, and left running they hold memory, cores and (workers) the claims of the runs they train, so a rerun
would wait for them. On Linux each child asks the kernel for SIGKILL when its parent dies (prctl
PR_SET_PDEATHSIG), which covers a SIGKILLed parent; a watchdog thread covers other platforms and the moment between
fork and prctl. A pool whose parent is interrupted (SIGTERM, Ctrl-C, an error) stops its children within seconds
instead of waiting for their tasks to end.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 1.0
Mapper = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]  # map a picklable function over items


def in_turn(function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """A Mapper: one item after another, here."""
    return [function(item) for item in items]


Pending = Callable[[], list[Any]]  # waits for a started map's results


class PoolMapper:
    """A Mapper over a pool's processes: the results in order, the first error raised."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool

    def __call__(self, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return self.start(function, items)()

    def start(self, function: Callable[[Any], Any], items: Sequence[Any]) -> Pending:
        futures = [self.pool.submit(function, item) for item in items]
        return lambda: [future.result() for future in futures]


def mapper_of(pool: ProcessPoolExecutor | None) -> Mapper:
    """A Mapper over a pool's processes (in_turn without one)."""
    return in_turn if pool is None else PoolMapper(pool)


def start(mapper: Mapper, function: Callable[[Any], Any], items: Sequence[Any]) -> Pending:
    """Begin a map and return what waits for its results: over a pool's processes the work starts now, while this
    process goes on with other work; in turn it is done when waited for."""
    if isinstance(mapper, PoolMapper):
        return mapper.start(function, items)
    return lambda: mapper(function, items)


def die_with_parent(parent: int | None = None) -> None:
    """In a child: be killed when the parent process goes (call first thing in the child)."""
    parent = parent or os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="medablate-parent-watch").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)


def _start(parent: int, payload: bytes) -> None:
    """The first thing a pool's process runs. Its initializer and their arguments come pickled, so that importing
    their modules (matplotlib, torch: seconds) happens only after this process is bound to its parent's life."""
    die_with_parent(parent)
    initializer, args = pickle.loads(payload)
    if initializer is not None:
        initializer(*args)
    atexit.register(_exit_now)


def _exit_now() -> None:
    """A pool's process at its exit, once its threads are joined (Python joins them before its atexit calls, and
    every task has written its files whole before it returned): flush the output and end, without tearing down the
    modules. With torch and matplotlib loaded that teardown takes most of a second, which a study would wait for."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or no stream
            pass
    os._exit(0)


@contextmanager
def process_pool(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
                 spawn: bool = True, grace: float = 8.0) -> Iterator[ProcessPoolExecutor]:
    """A ProcessPoolExecutor whose processes die with this one. Left by an exception (a SIGTERM's Terminated,
    Ctrl-C, an error), it cancels what has not started, sends SIGTERM to its processes (a training worker then
    checkpoints after its batch and exits), and SIGKILLs those still there after `grace` seconds."""
    context = multiprocessing.get_context("spawn" if spawn else None)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start,
                               initargs=(os.getpid(), pickle.dumps((initializer, initargs))))
    try:
        for _ in range(workers):  # every process started now, by this thread: Linux ties PR_SET_PDEATHSIG to the
            pool.submit(_nothing)  # thread that started a child, so one started from a short-lived thread (a
        yield pool                 # spawned pool starts them on demand, in the submitting thread) would die with it
    except BaseException:
        stop(pool, grace)
        raise
    pool.shutdown(wait=True)


def _nothing() -> None:
    pass


def stop(pool: ProcessPoolExecutor, grace: float) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            _signal(process, signal.SIGKILL)
            process.join(1.0)


def _signal(process: Any, signum: int) -> None:
    try:
        if process.pid is not None:
            os.kill(process.pid, signum)
    except ProcessLookupError:
        pass


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (state first, the parent pid second, the start time at 19); None where
    there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pids: list[int]) -> list[int]:
    """Those of pids that still run (a zombie has exited; only its parent's wait is missing)."""
    return [pid for pid in pids if (fields := stat_fields(pid)) is not None and fields[0] != "Z"]


def descendants(pid: int) -> list[int]:
    """The live processes below `pid` (children, theirs, ...), from /proc (Linux; [] elsewhere)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        fields = stat_fields(int(entry)) if entry.isdigit() else None
        if fields is not None and fields[0] != "Z":  # a zombie has exited; only its parent's wait is missing
            parents[int(entry)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found
