"""Study wall time: the course study (1 seed, 6 trials) sequentially and with --workers 2.

    python benchmarks/study_time.py                      # phantom, 1000 images per class, 3 epochs
    python benchmarks/study_time.py --epochs 5 --data ../shared/data/chest-xray-pneumonia/train

Prints, per configuration: wall time, the setup / runs / analysis / report phases (study.json's
timing_seconds), the summed training time of the runs (history seconds: epochs incl. validation), the fixed
cost per run (runs phase minus summed training, per run; sequential only, where it is meaningful), the
speed-up of the runs phase, and whether every run's numbers equal the sequential one-thread study's
(each of 2 workers gets one of the machine's threads, so one thread is the fair reference).
The Ray executor of issue 11 is not built yet, so it has no row.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, extra: list[str], args: argparse.Namespace) -> float:
    command = [sys.executable, "-m", "medablate.cli", "run", str(REPO / "examples" / "course-hw2.yaml"),
               "--out", str(out), "--set", f"training.epochs={args.epochs}", "--set", "seeds=[0]", *extra]
    if args.data:
        command += ["--set", f"data.path={args.data}", "--set", "test=null", "--set",
                    "data.split={method: stratified, val_fraction: 0.15, test_fraction: 0.15}"]
    else:
        command += ["--set", f"data.phantom.count_per_class={args.count}",
                    "--set", f"data.split.train_per_class={int(args.count * 0.8)}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def numbers(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as handle:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(handle)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000, help="phantom images per class")
    parser.add_argument("--data", type=Path, help="an image folder instead of the phantom")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="study-time-"))
    configurations = {"sequential": [], "sequential, 1 thread": ["--threads", "1"], "--workers 2": ["--workers", "2"]}
    found = {}
    for name, extra in configurations.items():
        out = root / name.replace(" ", "_").replace(",", "").replace("-", "")
        wall = run(out, extra, args)
        info = json.loads((out / "study.json").read_text())
        with (out / "results.csv").open() as handle:
            training = sum(float(r["seconds"]) for r in csv.DictReader(handle) if r["seconds"])
        found[name] = {"wall": wall, "timing": info["timing_seconds"], "training": training, "runs": info["runs"],
                       "numbers": numbers(out)}
    reference = found["sequential"]["timing"]["runs"]
    print(f"course study, 1 seed x {len(found['sequential']['numbers'])} runs, {args.epochs} epochs, "
          f"{'data ' + str(args.data) if args.data else f'phantom {args.count} per class'}; 2-core CPU")
    print("| configuration | wall s | setup | runs phase | analysis | report | summed training | fixed cost per run | "
          "speed-up (runs phase) | numbers equal 1-thread sequential |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, f in found.items():
        t = f["timing"]
        fixed = (t["runs"] - f["training"]) / f["runs"] if "workers" not in name else float("nan")
        same = f["numbers"] == found["sequential, 1 thread"]["numbers"]
        print(f"| {name} | {f['wall']:.1f} | {t['setup']:.1f} | {t['runs']:.1f} | {t['analysis']:.1f} | "
              f"{t['report']:.1f} | {f['training']:.1f} | {fixed:.2f} | {reference / t['runs']:.2f} | "
              f"{'yes' if same else 'no'} |")
    print(f"folders under {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
