"""Where a fused step's time goes: milliseconds per step, operators called from Python and (CUDA) kernel launches per
step, and torch.profiler's top operators by self CPU and CUDA time: the course MLP, 5 seeds.

    python benchmarks/fusion_profile.py --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from waits import in_words, waits  # benchmarks/waits.py, beside this file

from medablate.config.schema import TrialConfig
from medablate.data.sources import phantom
from medablate.train.engine import Split, Trainer, resolve_device
from medablate.train.fusion import FusedGroup, RngSlot
from medablate.train.tasks import make_task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = phantom.generate(200, args.size, 0)
    train = Split.from_numpy(data.images[:320], data.labels[:320], device)
    val = Split.from_numpy(data.images[320:], data.labels[320:], device)
    model = {"name": args.model} if args.model != "mlp" else {}
    config = TrialConfig.model_validate({"model": model, "training": {"epochs": 2, "fuse_seeds": "on"}})
    root = Path(tempfile.mkdtemp(prefix="fusion-profile-"))

    def group(on_batch: Callable[[int, int], None] | None = None) -> FusedGroup:
        """The seeds as one fused group (on_batch: the first seed's, called once a step)."""
        trainers, rngs = [], []
        for seed in range(args.seeds):
            t = Trainer(config, make_task(config.training.loss, 2), seed, (args.size, args.size), ["a", "b"],
                        root / f"{len(list(root.iterdir()))}-{seed}", device, 1)
            t.begin(train)
            trainers.append(t)
            rngs.append(RngSlot(device))
        return FusedGroup(trainers, rngs, [on_batch] + [None] * (args.seeds - 1), [None] * args.seeds)

    group().fit(train, val)  # warm-up
    timed = group()
    seconds = step_seconds(timed, device)
    timed.fit(train, val)
    print(f"a fused step (all {args.seeds} seeds): {1000 * np.median(seconds):.2f} ms (median of {len(seconds)})",
          flush=True)
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiled = group()
    mark_steps(profiled)
    with torch.profiler.profile(activities=activities) as prof:
        profiled.fit(train, val)
    for key in ("self_cpu_time_total",) + (("self_cuda_time_total",) if device.type == "cuda" else ()):
        print(prof.key_averages().table(sort_by=key, row_limit=18), flush=True)
    steps = [e for e in prof.events() if e.name == STEP]
    print(f"steps profiled: {len(steps)}; per step: {per_step(steps, 'aten::')} operators called from Python"
          + (f", {launches(prof.events(), steps)} kernel launches" if device.type == "cuda" else ""), flush=True)
    if device.type == "cuda":  # where a fused fit waits for the card (benchmarks/waits.py)
        steps_seen: list[int] = []
        waited = group(lambda b, n: steps_seen.append(b))
        print(in_words(waits(lambda: waited.fit(train, val), device), len(steps_seen)), flush=True)
    return 0


STEP = "fused step"


def step_seconds(group: FusedGroup, device: torch.device) -> list[float]:
    """Wrap the group's step in a clock (the device synchronised around it); the list fills as it trains."""
    seconds: list[float] = []
    step = group._step

    def clocked(*args: object) -> None:
        torch.cuda.synchronize() if device.type == "cuda" else None
        start = time.perf_counter()
        step(*args)  # type: ignore[arg-type]
        torch.cuda.synchronize() if device.type == "cuda" else None
        seconds.append(time.perf_counter() - start)

    group._step = clocked  # type: ignore[method-assign]
    return seconds


def mark_steps(group: FusedGroup) -> None:
    step = group._step

    def marked(*args: object) -> None:
        with torch.profiler.record_function(STEP):
            step(*args)  # type: ignore[arg-type]

    group._step = marked  # type: ignore[method-assign]


def per_step(steps: list, prefix: str) -> float:
    """The mean number of a step's outermost events whose name starts with prefix (an operator called inside
    another is the outer one's business)."""
    def count(event) -> int:  # type: ignore[no-untyped-def]
        if event.name.startswith(prefix):
            return 1
        return sum(count(child) for child in event.cpu_children)
    return sum(count(s) - (1 if s.name.startswith(prefix) else 0) for s in steps) / max(1, len(steps))


def launches(events: list, steps: list) -> float:
    """The mean number of kernel launches (from any thread: the backward pass runs on autograd's) within a step."""
    spans = [(s.time_range.start, s.time_range.end) for s in steps]
    inside = sum(1 for e in events if e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")
                 and any(a <= e.time_range.start <= b for a, b in spans))
    return inside / max(1, len(steps))


if __name__ == "__main__":
    raise SystemExit(main())
