"""The robustness panel's perturbations (evaluation.shifts): what another site's scanner, exposure or processing
does to an image, at severities 1-5 (0: the image unchanged).

A small table of facts drives them: each shift names the acquisition change it stands for and its parameter at
each severity, chosen from the physics of radiography rather than from any data (ImageNet-C's corruptions x 5
severities, Hendrycks & Dietterich 2019, and MedMNIST-C, Di Salvo et al. 2024, are the anchors). A shift works on
a split's uint8 images (N, C, H, W) on its device and returns uint8 images, as another site's files would be, and
is seeded by its name and severity alone: every run of a study is scored on the same shifted images (paired).
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medablate.core import names
from medablate.errors import UserError
from medablate.train.augment import BLUR_REFERENCE, blur

CHUNK = 256  # images shifted at a time: bounds the float copies, and fixes the order of random draws


@dataclass(frozen=True)
class Shift:
    name: str
    stands_for: str  # the change of acquisition or processing it models
    parameter: str  # what `levels` are
    levels: tuple[float, float, float, float, float]  # the parameter at severities 1..5
    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]  # floats in [0, 1] -> floats


def _brightness(x: torch.Tensor, level: float, _: torch.Generator) -> torch.Tensor:
    return x - level


def _contrast(x: torch.Tensor, level: float, _: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * level + mean


def _gamma(x: torch.Tensor, level: float, _: torch.Generator) -> torch.Tensor:
    return x.clamp_min(0).pow(level)


def _blur(x: torch.Tensor, level: float, _: torch.Generator) -> torch.Tensor:
    return blur(x, torch.full((len(x),), level * x.shape[-1] / BLUR_REFERENCE, device=x.device))


def _noise(x: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
    return torch.poisson(x.clamp_min(0) * level, generator=generator) / level


def _resolution(x: torch.Tensor, level: float, _: torch.Generator) -> torch.Tensor:
    height, width = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(height / level)), max(1, round(width / level))), mode="area")
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)


def _jpeg(x: torch.Tensor, level: float, _: torch.Generator) -> torch.Tensor:
    from PIL import Image

    pixels = _to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(pixels)
    for i, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "JPEG", quality=int(level))
        decoded = np.asarray(Image.open(buffer))
        out[i] = decoded[..., None] if decoded.ndim == 2 else decoded
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device).float() / 255


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _zoom(x: torch.Tensor, level: float, _: torch.Generator) -> torch.Tensor:
    theta = torch.tensor([[level, 0.0, 0.0], [0.0, level, 0.0]], device=x.device).expand(len(x), 2, 3)
    return _warp(x, theta)


def _rotation(x: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
    sign = torch.randint(0, 2, (len(x),), generator=generator, device=generator.device).to(x.device) * 2 - 1
    angle = sign * math.radians(level)
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros(len(x), device=x.device)
    return _warp(x, torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1))


SHIFTS = {s.name: s for s in [
    Shift("brightness", "a darker image: lower exposure, or another window level", "offset, in units of 0..1",
          (0.04, 0.08, 0.12, 0.16, 0.2), _brightness),
    Shift("contrast", "a flatter image: another detector's dynamic range or window width",
          "contrast kept (1: unchanged)", (0.8, 0.65, 0.5, 0.4, 0.3), _contrast),
    Shift("gamma", "another processing curve (look-up table) of the same exposure", "gamma (1: unchanged)",
          (1.2, 1.4, 1.6, 1.8, 2.0), _gamma),
    Shift("blur", "a larger focal spot, patient motion or a detector with a poorer MTF",
          "Gaussian sigma, in pixels of a 128-pixel image", (0.5, 0.75, 1.0, 1.5, 2.0), _blur),
    Shift("noise", "quantum noise of a lower dose (Poisson)", "photons per pixel at full intensity",
          (2000, 800, 300, 120, 50), _noise),
    Shift("resolution", "a coarser detector, or an archive that stored smaller images",
          "down-sampling factor (then up-sampled back)", (1.25, 1.5, 2.0, 3.0, 4.0), _resolution),
    Shift("jpeg", "lossy compression in an archive or a teaching file", "JPEG quality", (80, 60, 40, 25, 10),
          _jpeg),
    Shift("zoom", "tighter collimation or another field of view", "share of each side kept (then enlarged)",
          (0.95, 0.9, 0.85, 0.8, 0.7), _zoom),
    Shift("rotation", "patient positioning", "degrees, either way at random", (3, 6, 9, 12, 15), _rotation),
]}


def level(name: str, severity: int) -> float | None:
    """The parameter of a shift at a severity (None at 0: no shift)."""
    return SHIFTS[name].levels[severity - 1] if severity else None


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round_().to(torch.uint8)


def _generator(name: str, severity: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(zlib.crc32(f"{name}:{severity}".encode()))
    return generator


def shift_images(images: torch.Tensor, name: str, severity: int, only: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) images with the shift applied at the severity (0: the same tensor); with `only` (a bool
    per image), to those images alone (one class from another scanner, say). Seeded by name and severity."""
    if severity == 0:
        return images
    shift, value = SHIFTS[name], level(name, severity)
    assert value is not None
    generator = _generator(name, severity, images.device)
    out = images.clone()
    for start in range(0, len(images), CHUNK):
        chunk = images[start:start + CHUNK].float() / 255
        out[start:start + CHUNK] = _to_uint8(shift.apply(chunk, value, generator))
    return out if only is None else torch.where(only[:, None, None, None], out, images)


def class_index(class_names: list[str], only_class: str) -> int:
    """The class a class-conditional shift applies to (its name, case-insensitive), or the UserError."""
    lowered = [name.lower() for name in class_names]
    if only_class.lower() in lowered:
        return lowered.index(only_class.lower())
    suggestion = names.closest(only_class, class_names)
    hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
    raise UserError(f"evaluation.shifts has only_class: {only_class}, which is not a class of this data{hint}: the "
                    f"classes are {', '.join(class_names)}.")
