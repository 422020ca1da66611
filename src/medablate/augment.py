"""Training-time augmentation on whole batches: one random affine warp per image in a single call.

Rotation, translation and scaling become one (B, 2, 3) matrix batch applied by MONAI's AffineTransform
(grid sampling, no per-sample Python loop); contrast, brightness and the optional horizontal flip are
per-image tensor arithmetic. Random numbers come from torch's global generator, so a seed gives the
same augmentations and a resumed run continues them exactly. Off by default.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from medablate.config import AugmentConfig


def make_augment(config: AugmentConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if not config.enabled:
        return None
    from monai.networks.layers import AffineTransform

    warp = AffineTransform(normalized=True, mode="bilinear", padding_mode="border", align_corners=False)

    def augment(images: torch.Tensor) -> torch.Tensor:
        """(B, H, W) floats in [0, 1] -> the same shape, each image with its own random transform."""
        count, device = images.shape[0], images.device

        def uniform() -> torch.Tensor:  # in [-1, 1), one per image
            return torch.rand(count, device=device) * 2 - 1

        angle = uniform() * math.radians(config.rotate)
        zoom = 1 + uniform() * config.scale
        shift_x, shift_y = uniform() * 2 * config.translate, uniform() * 2 * config.translate
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
        out = warp(images[:, None], theta)[:, 0]
        if config.flip:
            flipped = torch.rand(count, device=device) < 0.5
            out = torch.where(flipped[:, None, None], out.flip(-1), out)
        mean = out.mean(dim=(1, 2), keepdim=True)
        contrast = 1 + uniform()[:, None, None] * config.contrast
        brightness = uniform()[:, None, None] * config.brightness
        return ((out - mean) * contrast + mean + brightness).clamp_(0, 1)

    return augment
