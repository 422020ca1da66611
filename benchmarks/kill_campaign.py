"""Random-kill campaign: kill a small study with SIGKILL at random moments (and at random named points), rerun the
same command until it finishes, and compare every result with an uninterrupted run.

    python benchmarks/kill_campaign.py 30            # 30 studies, 1-2 kills each
    python benchmarks/kill_campaign.py 30 --seed 1
    python benchmarks/kill_campaign.py 6 --cnn       # a small CNN study: dataset normalisation, shift augmentation, TTA
    python benchmarks/kill_campaign.py 6 --kfold     # the MLP study cross-validated: 3 folds x 2 seeds per trial
    python benchmarks/kill_campaign.py 6 --fused     # each trial's 2 seeds trained as one fused group
    python benchmarks/kill_campaign.py --points batch,before-metrics,before-run-figures,report   # one study a point

Half the studies run with --workers 2. A kill is SIGKILL to the `medablate run` process alone, not its process
group (as an out-of-memory kill or a scheduler's kill of one pid would): its workers and figure processes must die
with it. The processes below it just before the kill that are still alive 3 s after it are orphans.
A named point reached first in a worker kills that worker alone (as the kernel kills one process for memory): the
study stops with a message and the line says "(a worker alone)".
Prints one line per study and a summary: "identical N/N, missing files M, temp files T, claims C, orphans O".
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from medablate.core import faults  # noqa: E402
from medablate.core.children import alive as still_running  # noqa: E402
from medablate.core.children import descendants  # noqa: E402

STUDY = {
    "name": "campaign", "seeds": [0, 1],
    "data": {"image_size": 32, "phantom": {"count_per_class": 40}, "split": {"method": "course", "train_per_class": 30}},
    "test": {"phantom": {"count_per_class": 10}},
    "model": {"hidden": [32, 16], "dropout": [0.2, 0.1]},
    "training": {"epochs": 3, "batch_size": 16, "checkpoint_every": 2},  # kills between checkpoints replay
    "comparisons": [{"name": "loss", "vary": {"training.loss": ["BCEWithLogitsLoss", "CrossEntropyLoss"]}},
                    {"name": "activation", "vary": {"model.activation": ["ReLU", "Sigmoid"]}}],
}
TIMING = {"seconds", "seconds_this_invocation", "started", "finished", "resumed", "command", "traceback"}
POINTS = [*faults.POINTS, "write:study.json", "write:results.csv", "write:history.csv", "write:metrics.json",
          "write:report.html", "write:loss.png", "write:curves.png", "after-checkpoint@4", "before-metrics@3"]


def command(study: Path, out: Path, workers: int = 1) -> list[str]:
    """One torch thread per process, so that a study with --workers 2 (a thread each) gives the same numbers as
    the uninterrupted one-process study (a sum over 2 threads rounds differently from one over 1)."""
    return [sys.executable, "-m", "medablate.cli", "run", str(study), "--out", str(out), "--workers", str(workers),
            "--threads", "1"]


ORPHAN_WAIT = 3.0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "(gone)"


def orphans_of(children: list[int]) -> int:
    """How many of a killed process's children (and theirs) are still alive ORPHAN_WAIT seconds after the kill."""
    deadline = time.monotonic() + ORPHAN_WAIT
    alive = children
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = still_running(alive)
    for pid in alive:  # say what it was, and leave nothing behind for the next study
        print(f"  orphan {pid}: {cmdline(pid)}", flush=True)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(alive)



def environment(kill_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != faults.VARIABLE}
    env["MPLCONFIGDIR"] = env.get("MPLCONFIGDIR") or tempfile.mkdtemp(prefix="mpl-")
    env["MEDABLATE_FIGURE_PROCESSES"] = "2"  # figures in helper processes, so kills land in them too
    if kill_at:
        env[faults.VARIABLE] = kill_at
    return env


def kill_after(study: Path, out: Path, seconds: float, workers: int = 1) -> tuple[bool, int]:
    """Run, SIGKILL the process alone after `seconds`; (whether it was killed, how many of its children outlived
    it). False when it finished first."""
    process = subprocess.Popen(command(study, out, workers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=environment())
    try:
        process.wait(timeout=seconds)
        return False, 0
    except subprocess.TimeoutExpired:
        children = descendants(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True, orphans_of(children)


def kill_at_point(study: Path, out: Path, point: str, workers: int = 1) -> tuple[str | None, int]:
    """Run until the named point kills the process that reaches it first (SIGKILL, from itself): who was killed
    (None: nobody, it finished first; "worker": a worker process alone, whose parent then stops with a message,
    as when the kernel kills one worker for memory; else the study), and how many of the processes below the
    study outlived the kill (a figure process's point stands for the machine dying: its parent goes too)."""
    marker = Path(tempfile.mkdtemp(prefix="kill-")) / "hit"  # faults.ONCE: one process is hit, and says which
    process = subprocess.Popen(command(study, out, workers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=environment(point) | {faults.ONCE: str(marker)})
    children: list[int] = []
    while process.poll() is None:
        children = list(dict.fromkeys(children + descendants(process.pid)))
        time.sleep(0.1)
    if not marker.exists():
        return None, 0
    hit = int(marker.read_text() or 0)
    who = "worker" if hit != process.pid and process.returncode != -signal.SIGKILL else "study"
    return who, orphans_of(children)


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def csv_without_seconds(path: Path) -> list[list[str]]:
    """Rows of a CSV without wall-clock time (columns seconds, seconds_mean, ...; comparison rows of seconds)."""
    with path.open() as handle:
        rows = list(csv.reader(handle))
    drop = {i for i, name in enumerate(rows[0]) if name.startswith("seconds")}
    outcome = rows[0].index("outcome") if "outcome" in rows[0] else None
    return [[c for i, c in enumerate(r) if i not in drop] for r in rows
            if outcome is None or r[outcome] != "seconds"]


def visible_files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}


def compare(out: Path, clean: Path) -> dict[str, Any]:
    missing = sorted(visible_files(clean) - visible_files(out))
    temp = [str(p) for p in out.rglob("*.tmp")]
    claims = [str(p) for p in out.rglob("claim.lock")] + [str(p) for p in out.rglob("running.json")]
    same = not missing and (out / "results.csv").exists() and \
        csv_without_seconds(out / "results.csv") == csv_without_seconds(clean / "results.csv")
    for run_dir in (clean / "trials").iterdir():
        other = out / "trials" / run_dir.name
        if not same or not (other / "metrics.json").exists():
            same = False
            break
        same = csv_without_seconds(other / "history.csv") == csv_without_seconds(run_dir / "history.csv") and \
            without_timing(json.loads((other / "metrics.json").read_text())) == \
            without_timing(json.loads((run_dir / "metrics.json").read_text()))
    for name in ("summary.csv", "comparisons.csv"):
        same = same and csv_without_seconds(out / name) == csv_without_seconds(clean / name)
    return {"identical": same, "missing": missing, "temp": temp, "claims": claims}


CNN_STUDY = STUDY | {
    "data": {**STUDY["data"], "normalize": "dataset",
             "augment": {"crop_scale": [0.7, 1.0], "rotate": 5, "gamma": 0.2, "noise": 0.02, "blur": 1.0}},
    "evaluation": {"tta": "flip"},
    "model": {"name": "cnn", "widths": [8, 16], "blocks": [1, 1]},
    "comparisons": [{"name": "loss", "vary": {"training.loss": ["BCEWithLogitsLoss", "CrossEntropyLoss"]}},
                    {"name": "normalisation", "vary": {"data.normalize": ["dataset", "image"]}}],
}


KFOLD_STUDY = STUDY | {"data": {**STUDY["data"], "split": {"method": "kfold", "folds": 3}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", type=int, nargs="?", default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cnn", action="store_true", help="a small CNN study (dataset normalisation, shift "
                                                           "augmentation, flip TTA) instead of the MLP")
    parser.add_argument("--kfold", action="store_true", help="the MLP study with a 3-fold split (12 runs)")
    parser.add_argument("--fused", action="store_true", help="each trial's seeds trained as one fused group "
                                                            "(training.fuse_seeds: on)")
    parser.add_argument("--points", help="comma-separated named points: one study killed at each (of POINTS), "
                                         "instead of random moments")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.points.split(",")] if args.points else None
    if chosen:
        args.studies = len(chosen)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="kill-campaign-"))
    study = root / "study.yaml"
    config = CNN_STUDY if args.cnn else KFOLD_STUDY if args.kfold else STUDY
    if args.fused:
        config = config | {"training": {**config["training"], "fuse_seeds": "on"}}
    study.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.perf_counter()
    subprocess.run(command(study, root / "clean"), check=True, capture_output=True, env=environment())
    full = time.perf_counter() - started
    print(f"uninterrupted study: {full:.1f} s (4 trials x 2 seeds, 3 epochs)")
    totals = {"identical": 0, "missing": 0, "temp": 0, "claims": 0, "kills": 0, "orphans": 0}
    for index in range(args.studies):
        out = root / f"killed-{index}"
        kills = []
        workers = rng.choice([1, 2])
        for _ in range(1 if chosen else rng.choice([1, 2])):
            if chosen or rng.random() < 0.5:
                point = chosen[index] if chosen else rng.choice(POINTS)
                who, orphans = kill_at_point(study, out, point, workers)
                if who:
                    kills.append(point + (" (a worker alone)" if who == "worker" else ""))
            else:
                moment = rng.uniform(1.0, full)
                killed, orphans = kill_after(study, out, moment, workers)
                if killed:
                    kills.append(f"{moment:.1f}s")
            totals["orphans"] += orphans
        result = subprocess.run(command(study, out, workers), capture_output=True, text=True, env=environment())
        found = compare(out, root / "clean") if result.returncode == 0 else \
            {"identical": False, "missing": ["(rerun failed)"], "temp": [], "claims": []}
        totals["identical"] += found["identical"]
        totals["missing"] += len(found["missing"])
        totals["temp"] += len(found["temp"])
        totals["claims"] += len(found["claims"])
        totals["kills"] += len(kills)
        print(f"study {index + 1:2d} (workers {workers}): kills {', '.join(kills) or 'none (finished first)'}: "
              f"{'identical' if found['identical'] else 'DIFFERENT'}"
              + (f", missing {found['missing'][:3]}" if found["missing"] else "")
              + (f", temp {found['temp'][:3]}" if found["temp"] else ""), flush=True)
    print(f"identical {totals['identical']}/{args.studies}, kills {totals['kills']}, missing files {totals['missing']}, "
          f"temp files {totals['temp']}, claims left {totals['claims']}, orphans {totals['orphans']}; folders under "
          f"{root}")
    return 0 if totals["identical"] == args.studies and not totals["orphans"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
