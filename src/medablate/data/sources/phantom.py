"""Synthetic, radiograph-like chest images: the embedded default when a study names no data.

Every image has a body outline, two lung fields, a mediastinum, curved ribs, exposure that varies
from image to image, and noise. Class 1 ("pneumonia") carries one to three soft, low-contrast
opacities inside the lungs. The contrast is chosen so that the course MLP does well but not
perfectly (about 80-97% validation accuracy after 10 epochs): a phantom that is trivially
separable would hide differences between trials. Deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medablate.data import cache
from medablate.data.sources import DataSource, register_source
from medablate.data.types import ImageSet
from medablate.errors import UserError

if TYPE_CHECKING:
    from medablate.config.schema import DataConfig, TestConfig

CLASS_NAMES = ["normal", "pneumonia"]
SYNTHETIC_NOTE = "synthetic phantom images (procedurally generated, not real patients)"
FIGURE_NOTE = "SYNTHETIC phantom data, not real patients"
_CHUNK = 64
# Opacity size (as a fraction of the half-width) and brightness (of the 0..1 range): tuned so the course MLP
# lands between about 80% and 97% validation accuracy after 10 epochs (see tests/test_data_phantom.py).
OPACITY_SIGMA = (0.12, 0.24)
OPACITY_AMPLITUDE = (0.2, 0.4)
_CODE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()  # the drawing's version, in the cache key


def generate(count_per_class: int, image_size: int = 256, seed: int = 0) -> ImageSet:
    """Return count_per_class images of each class, interleaved in a fixed order: drawn once, then read from the
    decode cache (drawing 2000 images of 256 px takes about 7 s on a laptop core, most of it the noise, which one
    random stream must draw in order; reading them back a tenth of a second). The key holds this file's code, so
    a change to the phantom draws it anew."""
    key = hashlib.sha256(json.dumps({"source": "phantom", "count": count_per_class, "size": image_size, "seed": seed,
                                     "code": _CODE}, sort_keys=True).encode()).hexdigest()[:32]
    return cache.cached(key, lambda: _generate(count_per_class, image_size, seed))


def _generate(count_per_class: int, image_size: int, seed: int) -> ImageSet:
    rng = np.random.default_rng([seed, image_size, count_per_class, 20261126])
    labels = np.tile(np.array([0, 1], dtype=np.int64), count_per_class)
    labels = np.sort(labels, kind="stable")  # all class 0, then all class 1, like one array per class
    images = np.empty((len(labels), image_size, image_size), dtype=np.uint8)
    for start in range(0, len(labels), _CHUNK):
        chunk = labels[start:start + _CHUNK]
        images[start:start + len(chunk)] = _draw(chunk, image_size, rng)
    ids = [f"phantom-{CLASS_NAMES[y]}-{i:05d}" for i, y in enumerate(labels)]
    return ImageSet(images, labels, ids, list(CLASS_NAMES), "phantom", synthetic=True, notes=[SYNTHETIC_NOTE])


def _smooth_inside(d: np.ndarray, softness: float) -> np.ndarray:
    """1 inside an ellipse (d < 1), 0 outside, with a soft edge of the given width."""
    return 1.0 / (1.0 + np.exp(np.minimum((d - 1.0) / softness, 50.0)))


def _ellipse(xx, yy, cx, cy, ax, ay):
    return np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)


def _draw(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    xx, yy = xx[None], yy[None]

    def u(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, size=(n, 1, 1)).astype(np.float32)

    cx, cy = u(-0.06, 0.06), u(-0.05, 0.05)
    body = _smooth_inside(_ellipse(xx, yy, cx, cy + 0.05, u(0.78, 0.92), u(0.95, 1.1)), 0.04)
    lung_w, lung_h, gap = u(0.22, 0.29), u(0.48, 0.6), u(0.28, 0.36)
    left = _smooth_inside(_ellipse(xx, yy, cx - gap, cy - 0.08, lung_w, lung_h), 0.05)
    right = _smooth_inside(_ellipse(xx, yy, cx + gap, cy - 0.08, lung_w * u(0.9, 1.05), lung_h), 0.05)
    lungs = np.maximum(left, right)
    spine = np.exp(-(((xx - cx) / u(0.07, 0.1)) ** 2)) * body
    rib_phase, rib_period, rib_bend = u(0, 6.3), u(0.13, 0.18), u(0.25, 0.45)
    ribs = (np.sin(2 * np.pi * (yy + rib_bend * (xx - cx) ** 2) / rib_period + rib_phase) > 0.55) * lungs

    image = 0.06 + 0.5 * body - 0.3 * lungs + 0.2 * spine + 0.09 * ribs
    image += _opacities(labels, xx, yy, cx, cy, gap, lung_w, lung_h, rng) * lungs
    image += 0.04 * _blobs(n, xx, yy, rng)  # anatomy-like clutter in both classes
    gain, offset, gamma = u(0.85, 1.15), u(-0.05, 0.05), u(0.85, 1.15)
    image = np.clip(gain * image + offset, 0.0, 1.0) ** gamma
    image += rng.normal(0.0, 1.0, size=image.shape).astype(np.float32) * u(0.02, 0.05)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _opacities(labels, xx, yy, cx, cy, gap, lung_w, lung_h, rng):
    """Soft Gaussian opacities inside one lung or both, for the positive images only."""
    n = len(labels)
    out = np.zeros((n, xx.shape[1], xx.shape[2]), dtype=np.float32)
    for i in np.flatnonzero(labels == 1):
        for _ in range(rng.integers(1, 4)):
            side = rng.choice([-1.0, 1.0])
            ox = cx[i, 0, 0] + side * gap[i, 0, 0] + rng.uniform(-0.6, 0.6) * lung_w[i, 0, 0]
            oy = cy[i, 0, 0] - 0.08 + rng.uniform(-0.6, 0.6) * lung_h[i, 0, 0]
            sigma = rng.uniform(*OPACITY_SIGMA)
            amplitude = rng.uniform(*OPACITY_AMPLITUDE)
            out[i] += amplitude * np.exp(-((xx[0] - ox) ** 2 + (yy[0] - oy) ** 2) / (2 * sigma**2))
    return out


def _blobs(n: int, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two small random bright spots per image (vessels, nipples, buttons) so that 'any spot' is not the label."""
    out = np.zeros((n, xx.shape[1], xx.shape[2]), dtype=np.float32)
    for i in range(n):
        for _ in range(2):
            bx, by, s = rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.4), rng.uniform(0.02, 0.05)
            out[i] += np.exp(-((xx[0] - bx) ** 2 + (yy[0] - by) ** 2) / (2 * s**2))
    return out


def available_memory() -> int:
    """Bytes of memory this machine can still give (MemAvailable; the physical memory where that is unknown)."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(count_per_class: int, image_size: int, what: str) -> None:
    """Refuse, before allocating, phantom images that cannot fit in memory (with room for the split's copies)."""
    needed = 2 * count_per_class * image_size * image_size * 3  # the images, the split tensors and one more copy
    free = available_memory()
    if needed > free:
        raise UserError(f"{what} is {count_per_class}: {2 * count_per_class} phantom images of {image_size}x"
                        f"{image_size} need about {needed / 2**30:.1f} GiB, and this machine has "
                        f"{free / 2**30:.1f} GiB free. Lower it (the default is 1000) or data.image_size.")


def _load(config: DataConfig) -> ImageSet:
    check_fits(config.phantom.count_per_class, config.image_size, "data.phantom.count_per_class")
    return generate(config.phantom.count_per_class, config.image_size, config.phantom.seed)


def _load_test(data: DataConfig, test: TestConfig, class_names: list[str]) -> ImageSet:
    seed = test.phantom.seed if test.phantom.seed is not None else data.phantom.seed + 1
    if seed == data.phantom.seed:
        raise UserError("test.phantom.seed equals data.phantom.seed, so the test images would repeat the "
                        "training images: choose another test seed.")
    check_fits(test.phantom.count_per_class, data.image_size, "test.phantom.count_per_class")
    return generate(test.phantom.count_per_class, data.image_size, seed)


register_source(DataSource(
    "phantom", "nothing: generated", "no", "the default when `data.path` is unset; synthetic radiograph-like images",
    _load, _load_test, real=False, rank=50))
