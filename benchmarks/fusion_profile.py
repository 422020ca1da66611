"""Where a fused step's time goes (torch.profiler, top operators by self CPU and CUDA time): the course MLP, 5 seeds.

    python benchmarks/fusion_profile.py --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

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

    def group() -> FusedGroup:
        trainers, rngs = [], []
        for seed in range(args.seeds):
            t = Trainer(config, make_task(config.training.loss, 2), seed, (args.size, args.size), ["a", "b"],
                        root / f"{len(list(root.iterdir()))}-{seed}", device, 1)
            t.begin(train)
            trainers.append(t)
            rngs.append(RngSlot(device))
        return FusedGroup(trainers, rngs, [None] * args.seeds, [None] * args.seeds)

    group().fit(train, val)  # warm-up
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        group().fit(train, val)
    for key in ("self_cpu_time_total",) + (("self_cuda_time_total",) if device.type == "cuda" else ()):
        print(prof.key_averages().table(sort_by=key, row_limit=18), flush=True)
    print("steps profiled:", 2 * int(np.ceil(320 / 32)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
