"""Named fault-injection points: places where the fault tests kill the process to prove nothing is lost.

`point(name)` does nothing unless the environment variable MEDABLATE_KILL_AT names that point, as `name` (the
first time it is reached) or `name@N` (the N-th time); then the process kills itself with SIGKILL, exactly
as an out-of-memory kill or a pulled plug would. Atomic writes are the point `write:<file name>` (inside the
write, after the temp file is complete, before the rename). POINTS lists the others, for the tests.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "MEDABLATE_KILL_AT"
POINTS = {
    "after-checkpoint": "after an epoch's checkpoint, before its history row",
    "before-run-figures": "after a run's predictions, before its figures and examples",
    "before-metrics": "after a run's figures and examples, before metrics.json (its done marker)",
    "finish": "in the engine's finish, before the final weights-only last.pt",
    "analysis": "in the analysis, after results.csv and before summaries, comparisons and figures",
    "report": "in the report, before report.html and report.md are written",
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
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
