"""The one exception type for mistakes a user can fix (bad config, bad data, bad paths).

The CLI prints its message as one paragraph and exits with code 2, without a traceback;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A problem with the user's input, with a message that names the culprit and the fix."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, SLURM preemption, kill): handled like Ctrl-C, so claims are released and every
    file stays whole, but the command exits with 143 as a terminated process does."""


_deferred = 0  # > 0 while a run trains: a signal then waits for the end of the batch (training checks for it)
_pending: int | None = None


def on_signal(signum: int, frame: object) -> None:
    """The handler for SIGTERM and SIGINT: stop at once, or, while a run trains, after the batch in progress,
    where the trainer writes a checkpoint of that very step first (so the rerun loses nothing)."""
    global _pending
    if _deferred:
        _pending = signum
        return
    raise _stop(signum)


def _stop(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def stop_requested() -> bool:
    return _pending is not None


def take_stop() -> KeyboardInterrupt:
    """The exception for the signal that arrived (and forget it)."""
    global _pending
    signum, _pending = _pending, None
    return _stop(signum if signum is not None else signal.SIGINT)


@contextmanager
def stop_between_batches() -> Iterator[None]:
    """Inside, SIGTERM/SIGINT (with on_signal installed) wait for stop_requested(); a stop nobody took is raised
    on the way out."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    if not _deferred and _pending is not None:
        raise take_stop()
