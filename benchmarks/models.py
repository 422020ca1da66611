"""Every registered model on this machine: parameters, training seconds per epoch of the shared chest X-rays,
evaluation images per second and peak memory, in fp32 and with the speed switches.

    python benchmarks/models.py                          # all models, 128 and 224 px
    python benchmarks/models.py --models cnn resnet18 --sizes 128 --batches 20

A full epoch of the 5216 shared images would take minutes to hours per model on a CPU, so each measurement
trains `--batches` batches of 32 (after 2 warm-up batches) and extrapolates to ceil(5216 / 32) = 163 batches;
evaluation runs `--batches` batches of 64 under inference mode. The images are the shared training folder's
when it is beside the repository (else phantom images: speed does not depend on content). Each measurement runs
in its own process, so its peak memory (max RSS, or CUDA's max allocated) is its own.

Variants: fp32 (contiguous tensors), fp32 + channels-last, bf16 autocast + channels-last (convolutional networks;
the MLP's bf16 has no channels-last). A variant counts as
numerically sound when its training loss after the timed batches is finite and its evaluation logits agree with
fp32's to within 5% of their spread.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest-xray-pneumonia" / "train"
EPOCH_IMAGES = 5216
MODELS = {
    "mlp": {"name": "mlp"},
    "cnn": {"name": "cnn"},
    "resnet18": {"name": "resnet18"},
    "resnet34": {"name": "resnet34"},
    "resnet50": {"name": "resnet50"},
    "densenet121": {"name": "densenet121"},
    "efficientnet-b0": {"name": "efficientnet-b0"},
}
VARIANTS = {"fp32": ("fp32", "off"), "fp32+cl": ("fp32", "on"), "bf16+cl": ("bf16", "on")}


def images(size: int, count: int) -> tuple["object", str]:
    import numpy as np

    from medablate.config.schema import DataConfig
    from medablate.data import load_data

    if (SHARED / "NORMAL").is_dir():
        data = load_data(DataConfig(path=SHARED, image_size=size))
        rng = np.random.default_rng(0)
        pick = rng.choice(len(data), count, replace=False)
        return data.images[pick], "shared chest X-rays"
    from medablate.data.sources import phantom

    return phantom.generate(count // 2 + 1, size, 0).images[:count], "phantom"


def measure(model_name: str, size: int, variant: str, batches: int, device_name: str) -> dict:
    import torch

    from medablate.config.schema import TrialConfig
    from medablate.train.engine import Speed, build_trial_model
    from medablate.models import is_convolutional, parameters

    device = torch.device(device_name)
    precision, channels_last = VARIANTS[variant]
    config = TrialConfig.model_validate({"model": MODELS[model_name], "training": {"loss": "CrossEntropyLoss"}})
    convolutional = is_convolutional(config.model)
    if variant == "fp32+cl" and not convolutional:
        return {"skipped": "not convolutional"}
    speed = Speed(device, precision, channels_last == "on" and convolutional)  # bf16 for the MLP: no channels-last
    pixels, source = images(size, 64 * (batches + 2))
    data = torch.from_numpy(pixels).to(device)
    torch.manual_seed(0)
    model = build_trial_model(config, (1, size, size), 2).to(device)
    if speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    labels = torch.randint(0, 2, (len(data),), device=device)
    model.train()
    loss = torch.zeros(())
    started = 0.0
    for b in range(batches + 2):
        if b == 2:
            sync(device)
            started = time.perf_counter()
        x, y = speed.inputs(data[b * 32:(b + 1) * 32]), labels[b * 32:(b + 1) * 32]
        with speed.autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
    sync(device)
    train_batch = (time.perf_counter() - started) / batches
    model.eval()
    logits = []
    with torch.inference_mode():
        for b in range(batches + 1):
            if b == 1:
                sync(device)
                started = time.perf_counter()
            with speed.autocast():
                out = model(speed.inputs(data[b * 64:(b + 1) * 64])).float()
            if b == 1:
                logits.append(out.cpu())
        sync(device)
        evaluate = batches * 64 / (time.perf_counter() - started)
        reference = None
        if precision != "fp32":  # the same weights in fp32 on the same batch
            reference = model(speed.inputs(data[64:128])).float().cpu()
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    sound = math.isfinite(float(loss))
    if reference is not None:
        spread = float(reference.std()) or 1.0
        sound = sound and float((logits[0] - reference).abs().max()) <= 0.05 * spread
    return {"parameters": parameters(model), "train_seconds_per_batch": round(train_batch, 4),
            "epoch_seconds": round(train_batch * math.ceil(EPOCH_IMAGES / 32), 1),
            "eval_images_per_second": round(evaluate, 1), "peak_memory_mib": round(peak / 2**20),
            "sound": sound, "images": source, "threads": torch.get_num_threads()}


def sync(device: "object") -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 224])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--batches", type=int, default=8, help="timed batches per measurement (after 2 warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "SIZE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.one[2], args.batches, args.device)))
        return
    rows = []
    print(f"{'model':16} {'px':>4} {'variant':8} {'params':>10} {'s/epoch':>9} {'eval img/s':>10} {'peak MiB':>9} sound")
    for model in args.models:
        for size in args.sizes:
            for variant in args.variants:
                command = [sys.executable, __file__, "--one", model, str(size), variant, "--batches", str(args.batches),
                           "--device", args.device]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{model:16} {size:>4} {variant:8} failed: {done.stderr.strip().splitlines()[-1:]}")
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1]) | {"model": model, "size": size,
                                                                          "variant": variant}
                rows.append(row)
                if "skipped" in row:
                    continue
                print(f"{model:16} {size:>4} {variant:8} {row['parameters']:>10,} {row['epoch_seconds']:>9.1f} "
                      f"{row['eval_images_per_second']:>10.1f} {row['peak_memory_mib']:>9} {row['sound']}", flush=True)
    print(f"(seconds per epoch extrapolated from {args.batches} batches of 32 to {math.ceil(EPOCH_IMAGES / 32)}; "
          f"images: {rows[0].get('images') if rows else '?'}; threads: {rows[0].get('threads') if rows else '?'})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
