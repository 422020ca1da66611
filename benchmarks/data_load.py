"""Load the shared chest X-ray training folder at 256x256: cold (decode every JPEG) and warm (decode-once cache).

    python benchmarks/data_load.py [--folder ../shared/data/chest-xray-pneumonia/train] [--size 256]

The cold load uses a fresh, empty cache folder; the warm load reads what the cold one stored.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest-xray-pneumonia" / "train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=DEFAULT)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MEDABLATE_CACHE"] = cache
        from medablate.data.sources import image_folder

        results = []
        for label in ("cold", "warm"):
            started = time.perf_counter()
            data = image_folder.load(args.folder, args.size)
            seconds = time.perf_counter() - started
            results.append(data)
            print(f"{label}: {seconds:.2f} s, {len(data) / seconds:.0f} images/s ({len(data)} images, "
                  f"{data.images.nbytes / 2**20:.0f} MiB, {os.cpu_count()} cores)")
        assert np.array_equal(results[0].images, results[1].images) and results[0].ids == results[1].ids
        print("warm load equals cold load: yes")


if __name__ == "__main__":
    main()
