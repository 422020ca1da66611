"""Training-time augmentation on whole batches (B, C, H, W) on the training device, aimed at distribution shift.

Geometry: random resized crop, rotation, translation and scaling become one (B, 2, 3) matrix batch applied by
MONAI's AffineTransform in a single grid-sampling call (no per-image Python loop); the optional horizontal flip
(off by default: anatomy is not mirror-symmetric) is a masked flip. Intensity, per image: contrast, brightness,
gamma, Gaussian blur (one grouped convolution with a kernel per image) and Gaussian noise. MONAI's random
intensity transforms work on one image at a time with their own numpy random state, so these few lines of tensor
arithmetic replace them: batched, and drawn from torch's global generator, so a seed gives the same
augmentations and a resumed run continues them exactly. Off by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from medablate.config.schema import AugmentConfig

BLUR_REFERENCE = 128  # data.augment.blur is in pixels of a 128-pixel image, scaled with the image size


def make_augment(config: AugmentConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if not config.enabled:
        return None
    def augment(images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) (or (B, H, W)) floats in [0, 1] -> the same shape, each image with its own transform."""
        grey = images.dim() == 3
        x = images[:, None] if grey else images
        x = _intensity(config, _geometry(config, x, warp))
        return x[:, 0] if grey else x

    return augment


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """MONAI's AffineTransform(normalized=True, mode="bilinear", padding_mode="border", align_corners=False) of the
    (B, C, H, W) images by (B, 2, 3) matrices in (row, column) order, step for step, but without its two tensors
    made from Python numbers (each a copy to a GPU that waits for every kernel queued before it): the same numbers to
    the bit (tests/test_augment.py)."""
    bottom = torch.zeros(len(theta), 1, 3, device=theta.device, dtype=theta.dtype)
    bottom[..., 2] = 1.0
    full = torch.cat([theta, bottom], dim=1)
    full[:, :2] = full[:, :2].flip(1)  # reverse_indexing: (row, column) -> (x, y), rows then columns
    full[:, :, :2] = full[:, :, :2].flip(2)
    grid = F.affine_grid(full[:, :2], list(x.shape), align_corners=False)
    return F.grid_sample(x.contiguous(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def _uniform(count: int, device: torch.device) -> torch.Tensor:
    """One number per image in [-1, 1)."""
    return torch.rand(count, device=device) * 2 - 1


def _geometry(config: AugmentConfig, x: torch.Tensor, warp: Callable[..., torch.Tensor]) -> torch.Tensor:
    count, device = x.shape[0], x.device
    angle = _uniform(count, device) * math.radians(config.rotate)
    zoom = 1 + _uniform(count, device) * config.scale
    shift_x, shift_y = _uniform(count, device) * 2 * config.translate, _uniform(count, device) * 2 * config.translate
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    if config.crop_scale is not None:
        theta = _compose(_crop(config, count, device), theta)
    out = warp(x, theta)
    if config.flip:
        flipped = torch.rand(count, device=device) < 0.5
        out = torch.where(flipped[:, None, None, None], out.flip(-1), out)
    return out


def _crop(config: AugmentConfig, count: int, device: torch.device) -> torch.Tensor:
    """Random resized crop as (B, 2, 3) sampling matrices: area in crop_scale, aspect ratio log-uniform in
    crop_ratio, placed uniformly inside the image, resized to the full image (torchvision's rule, without its
    retries: sides above the image are clipped)."""
    low, high = config.crop_scale or (1.0, 1.0)
    area = low + torch.rand(count, device=device) * (high - low)
    log_low, log_high = math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])
    ratio = torch.exp(log_low + torch.rand(count, device=device) * (log_high - log_low))
    width, height = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
    centre_x, centre_y = _uniform(count, device) * (1 - width), _uniform(count, device) * (1 - height)
    zero = torch.zeros(count, device=device)
    return torch.stack([torch.stack([width, zero, centre_x], 1), torch.stack([zero, height, centre_y], 1)], 1)


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """The sampling matrix of `inner` applied inside `outer`'s crop: outer o inner, both (B, 2, 3)."""
    bottom = torch.zeros(len(outer), 1, 3, device=outer.device)  # (0, 0, 1), filled on the device: a tensor from
    bottom[..., 2] = 1.0  # Python numbers is a copy to the card that waits for every kernel queued before it
    return (torch.cat([outer, bottom], 1) @ torch.cat([inner, bottom], 1))[:, :2]


def _intensity(config: AugmentConfig, x: torch.Tensor) -> torch.Tensor:
    count, device = x.shape[0], x.device
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + _uniform(count, device)[:, None, None, None] * config.contrast
    brightness = _uniform(count, device)[:, None, None, None] * config.brightness
    x = ((x - mean) * contrast + mean + brightness).clamp_(0, 1)
    if config.gamma > 0:
        gamma = 1 + _uniform(count, device)[:, None, None, None] * config.gamma
        x = x.clamp_min(1e-6).pow(gamma)
    if config.blur > 0:
        x = blur(x, torch.rand(count, device=device) * config.blur * x.shape[-1] / BLUR_REFERENCE)
    if config.noise > 0:
        sigma = torch.rand(count, device=device)[:, None, None, None] * config.noise
        x = (x + torch.randn_like(x) * sigma).clamp_(0, 1)
    return x


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (sigma 0: unchanged), as one grouped convolution."""
    count, channels, height, width = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    safe = sigma.clamp_min(1e-3)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, K); sigma near 0 gives a unit impulse
    kernel = kernel.repeat_interleave(channels, 0)  # (B*C, K)
    flat = F.pad(x.reshape(1, count * channels, height, width), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=count * channels)
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=count * channels)
    return flat.reshape(count, channels, height, width)


Mixing = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, float]]


def make_mixing(mixup: float, cutmix: float) -> Mixing | None:
    """training.mixup / training.cutmix (Beta(alpha, alpha) concentrations; 0 is off): a function of a batch that
    returns (mixed images, the permutation each image was mixed with, lambda), the loss then being
    lambda L(y) + (1 - lambda) L(y[perm]). Mixup blends whole images (Zhang et al. 2018); cutmix pastes a box of
    the other image whose area is 1 - lambda (Yun et al. 2019); with both, each batch takes one at even odds (as
    timm does). Every draw comes from torch's generators, which checkpoints keep, so a resumed run mixes alike."""
    if mixup <= 0 and cutmix <= 0:
        return None

    def mix(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        use_cutmix = cutmix > 0 and (mixup <= 0 or bool(torch.rand(()) < 0.5))
        alpha = cutmix if use_cutmix else mixup
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(len(images), device=images.device)
        if not use_cutmix:
            return lam * images + (1 - lam) * images[perm], perm, lam
        height, width = images.shape[-2:]
        box_h, box_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
        top, bottom = max(cy - box_h // 2, 0), min(cy + box_h - box_h // 2, height)
        left, right = max(cx - box_w // 2, 0), min(cx + box_w - box_w // 2, width)
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = images[perm][..., top:bottom, left:right]
        return mixed, perm, 1 - (bottom - top) * (right - left) / (height * width)  # lambda of the box cut

    return mix
