"""Named fault-injection points: places where the fault tests kill the process to prove nothing is lost.

`point(name)` does nothing unless the environment variable MEDABLATE_KILL_AT names that point, as `name` (the
first time it is reached) or `name@N` (the N-th time); then the process kills itself with SIGKILL, exactly
as an out-of-memory kill or a pulled plug would (with MEDABLATE_KILL_ONCE=FILE only once, whichever process gets
there first: a retried Ray task then runs through). Atomic writes are the point `write:<file name>` (inside the
write, after the temp file is complete, before the rename). POINTS lists the others, for the tests.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "MEDABLATE_KILL_AT"
SIGNAL = "MEDABLATE_KILL_SIGNAL"  # KILL (default), TERM / INT, or STOP (frozen until a test acts): the signal sent
ONCE = "MEDABLATE_KILL_ONCE"  # a file path: the kill happens only if this file does not exist yet (it is created)
COUNT = "MEDABLATE_KILL_COUNT"  # with ONCE: how many processes are hit, one each (default 1)
HELPER_OF = "MEDABLATE_HELPER_OF"  # set in a helper process: the pid of the medablate process it works for
POINTS = {
    "after-checkpoint": "after an epoch's checkpoint, before its history row",
    "before-run-figures": "after the runs are trained, before a run's own figures and examples are drawn",
    "before-metrics": "after a run's predictions and final checkpoints, before its record (the run's done marker)",
    "finish": "in the engine's finish, before the final weights-only last checkpoint",
    "batch": "after each training batch (with MEDABLATE_KILL_SIGNAL=TERM: SIGTERM there, to test stopping mid-epoch)",
    "analysis": "in the analysis, after the per-run results table and before summaries, comparisons and figures",
    "report": "in the report, before its HTML and Markdown pages are written",
}
_reached: dict[str, int] = {}


def point(name: str) -> None:
    wanted = os.environ.get(VARIABLE)
    if not wanted:
        return
    target, _, nth = wanted.partition("@")
    if target != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1) and _first_anywhere():
        if os.environ.get(HELPER_OF):  # a helper's point stands for the machine dying: its parent goes too
            os.kill(int(os.environ[HELPER_OF]), signal.SIGKILL)
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get(SIGNAL, "KILL")))


def _first_anywhere() -> bool:
    """With MEDABLATE_KILL_ONCE, only the first process to get here (of all, a retried Ray task's too) is hit; with
    MEDABLATE_KILL_COUNT=N too, the first N (their markers FILE, FILE.2, ..., FILE.N each hold the process id)."""
    marker = os.environ.get(ONCE)
    if not marker:
        return True
    for n in range(1, int(os.environ.get(COUNT) or 1) + 1):
        try:
            descriptor = os.open(marker if n == 1 else f"{marker}.{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(descriptor, str(os.getpid()).encode())  # who was hit (a test may want to find it, e.g. to requeue it)
        os.close(descriptor)
        return True
    return False
