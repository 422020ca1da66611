"""Study wall time: the course study (6 trials per seed) sequentially, with --workers and with the Ray executor.

    python benchmarks/study_time.py                      # phantom, 1000 images per class, 3 epochs, 1 seed
    python benchmarks/study_time.py --epochs 5 --data ../shared/data/chest-xray-pneumonia/train
    python benchmarks/study_time.py --epochs 40 --seeds 5 --configs sequential,auto   # a GPU machine
    python benchmarks/study_time.py --seeds 3 --configs unfused,fused     # training.fuse_seeds off vs on

Prints, per configuration: wall time, the setup / runs / figures / analysis / report phases (study.json's
timing_seconds; figures: each run's own figures and examples, drawn after training), the summed training time of the
runs (history seconds: epochs incl. validation) and a run's mean epoch (a fused seed's is its group's epoch:
compared with fusion_time.py's epoch alone, it shows what runs side by side cost each other), the fixed cost per run
(runs phase minus summed training, per run; sequential only, where it is meaningful), the speed-up of the runs phase
over the first configuration, and whether every run's numbers equal the reference's: the sequential one-thread study
on a CPU (each of 2 workers or Ray tasks gets one of the machine's threads, so one thread is the fair reference),
else the first configuration (fused seeds agree with unfused ones to float rounding, not to the bit: "no" there is
expected; see tests/test_fusion.py), the phases longer than the runs phase (issue 20: none), and with --target
SECONDS whether the wall time met it. Each row is printed as soon as its study is done; stopped by a time limit
(SIGTERM) or Ctrl-C, it prints how far the running study got (runs finished, phases) and exits 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


CONFIGURATIONS = {"sequential": [], "sequential, 1 thread": ["--threads", "1"], "--workers 2": ["--workers", "2"],
                  "--workers auto": ["--workers", "auto"], "--executor ray": ["--executor", "ray"],
                  "seeds unfused": ["--set", "training.fuse_seeds=off"],
                  "seeds fused": ["--set", "training.fuse_seeds=on"],
                  "seeds fused, --workers auto": ["--set", "training.fuse_seeds=on", "--workers", "auto"]}
SHORT = {"sequential": "sequential", "threads1": "sequential, 1 thread", "workers2": "--workers 2",
         "auto": "--workers auto", "ray": "--executor ray", "unfused": "seeds unfused", "fused": "seeds fused",
         "fusedauto": "seeds fused, --workers auto"}


def command_for(out: Path, extra: list[str], args: argparse.Namespace) -> list[str]:
    seeds = list(range(args.seeds))
    command = [sys.executable, "-m", "medablate.cli", "run", str(REPO / "examples" / "course-hw2.yaml"),
               "--out", str(out), "--set", f"training.epochs={args.epochs}", "--set", f"seeds={seeds}", *extra]
    if args.data:
        command += ["--set", f"data.path={args.data}", "--set", "test=null", "--set",
                    "data.split={method: stratified, val_fraction: 0.15, test_fraction: 0.15}"]
    else:
        command += ["--set", f"data.phantom.count_per_class={args.count}",
                    "--set", f"data.split.train_per_class={int(args.count * 0.8)}"]
    return command


def run(out: Path, extra: list[str], args: argparse.Namespace) -> float:
    """One configuration's study in a process of its own; its wall time. Stopped (Ctrl-C, SIGTERM from a time limit),
    it stops the study too and says how far it got."""
    command = command_for(out, extra, args)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate()
    except KeyboardInterrupt:  # the first signal: later ones (timeout signals the child, then its group) wait too
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        process.terminate()
        process.wait(30)
        seconds = time.perf_counter() - started
        print(f"stopped after {seconds:.0f} s: {reached(out)}"
              + (f"; wall at most {args.target:g} s: MISSED" if args.target and seconds > args.target else ""),
              flush=True)
        raise
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return time.perf_counter() - started


def reached(out: Path) -> str:
    """How far a study got: its finished runs and phases (from its folder)."""
    trials = out / "trials"
    done = sum((d / "metrics.json").exists() for d in trials.iterdir()) if trials.is_dir() else 0
    try:
        info = json.loads((out / "study.json").read_text())
    except (OSError, ValueError):
        return "no study.json yet (still in setup)"
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in (info.get("timing_seconds") or {}).items())
    return f"{done} of {info.get('runs')} runs finished" + (f"; phases: {phases}" if phases else "")


def longer_than_runs(timing: dict[str, float]) -> str:
    """Issue 20's target, every phase at most as long as the runs phase: "none", or the phases longer."""
    return ", ".join(f"{k} {v:.1f} s" for k, v in timing.items() if k != "runs" and v > timing["runs"]) or "none"


def numbers(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as handle:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(handle)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--count", type=int, default=1000, help="phantom images per class")
    parser.add_argument("--data", type=Path, help="an image folder instead of the phantom")
    parser.add_argument("--configs", default="sequential,threads1,workers2,ray",
                        help=f"comma-separated, from {', '.join(SHORT)}")
    parser.add_argument("--target", type=float, help="a wall time in seconds: say under each row whether it was met")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="study-time-"))
    names = [SHORT[c.strip()] for c in args.configs.split(",")]
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a time limit's SIGTERM: say how far it got
    print(f"course study, {args.seeds} seed(s) x 6 trials = {6 * args.seeds} runs, {args.epochs} epochs, "
          f"{'data ' + str(args.data) if args.data else f'phantom {args.count} per class'}; folders under {root}")
    target = f" wall at most {args.target:g} s |" if args.target is not None else ""
    print("| configuration | wall s | setup | runs phase | figures | analysis | report | summed training | epoch s | "
          "fixed cost per run | speed-up (runs phase) | numbers equal the reference | phases longer than the runs |"
          + target)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if target else ""), flush=True)
    found: dict[str, dict] = {}
    for name in names:  # each row as soon as its study is done: a time limit loses only the one running
        out = root / name.replace(" ", "_").replace(",", "").replace("-", "")
        try:
            wall = run(out, CONFIGURATIONS[name], args)
        except KeyboardInterrupt:
            return 1
        info = json.loads((out / "study.json").read_text())
        with (out / "results.csv").open() as handle:
            training = sum(float(r["seconds"]) for r in csv.DictReader(handle) if r["seconds"])
        f = found[name] = {"wall": wall, "timing": info["timing_seconds"], "training": training, "runs": info["runs"],
                           "numbers": numbers(out)}
        first = found[names[0]]
        reference = found.get("sequential, 1 thread", first)
        t = f["timing"]
        parallel = "workers" in name or "ray" in name
        fixed = (t["runs"] - f["training"]) / f["runs"] if not parallel else float("nan")
        same = "reference" if f is reference else ("yes" if f["numbers"] == reference["numbers"] else "no")
        print(f"| {name} | {f['wall']:.1f} | {t['setup']:.1f} | {t['runs']:.1f} | {t.get('figures', 0):.1f} | "
              f"{t['analysis']:.1f} | {t['report']:.1f} | {f['training']:.1f} | "
              f"{f['training'] / f['runs'] / args.epochs:.2f} | {fixed:.2f} | "
              f"{first['timing']['runs'] / t['runs']:.2f} | {same} | {longer_than_runs(t)} |"
              + ("" if args.target is None else f" {'met' if wall <= args.target else 'MISSED'} |"), flush=True)
    if "sequential, 1 thread" in found and names[0] != "sequential, 1 thread":
        reference = found["sequential, 1 thread"]
        print("numbers equal the one-thread reference: " + ", ".join(
            f"{n} {'yes' if f['numbers'] == reference['numbers'] else 'no'}" for n, f in found.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
