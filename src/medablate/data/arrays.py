"""Checks and resizing shared by sources that hand over uint8 arrays."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medablate.errors import UserError


def check_uint8_images(array: np.ndarray, where: str) -> np.ndarray:
    """Accept (N, H, W) uint8 only; name the shape, dtype or value range and the fix otherwise."""
    if array.ndim != 3:
        hint = " (drop the channel axis: arr[..., 0] for grey images)" if array.ndim == 4 else ""
        raise UserError(f"{where} has shape {array.shape}, but medablate expects (N, H, W): "
                        f"one grey image per row{hint}.")
    if len(array) == 0:
        raise UserError(f"{where} holds no images (shape {array.shape}): each class needs at least one image.")
    if 0 in array.shape[1:]:
        raise UserError(f"{where} has shape {array.shape}: its images have no pixels; save real (N, H, W) images.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == np.bool_):
        raise UserError(f"{where} has dtype {array.dtype}, which is not pixel data: save the images as uint8 "
                        "0..255 (np.save(path, arr.astype(np.uint8)) for numbers; strings or objects cannot be images).")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise UserError(f"{where} holds NaN or infinite values ({int((~np.isfinite(array)).sum())} of them): replace "
                        "them (e.g. np.nan_to_num) and save uint8 0..255.")
    if array.dtype != np.uint8:
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise UserError(f"{where} has values from {lo:g} to {hi:g}, not 0..255: rescale it to 0..255 "
                            "and save it as uint8 (np.save(path, arr.astype(np.uint8))).")
        if np.issubdtype(array.dtype, np.floating) and hi <= 1.0:
            raise UserError(f"{where} is {array.dtype} with values from {lo:g} to {hi:g}, which looks scaled to "
                            "0..1: medablate expects uint8 0..255; save (arr * 255).round().astype(np.uint8).")
        raise UserError(f"{where} has dtype {array.dtype}, but medablate expects uint8 (0..255); its values fit, so "
                        "np.save(path, arr.astype(np.uint8)) fixes it.")
    return array


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, antialiased resize of (N, H, W) or (N, C, H, W) uint8 to size x size, in batches."""
    if images.shape[-2:] == (size, size):
        return images
    grey = images.ndim == 3
    batches = images[:, None] if grey else images
    out = np.empty((*batches.shape[:2], size, size), dtype=np.uint8)
    # batches of at most 256 images and about 256 MiB of float32: a 9000x9000 image alone is 324 MiB as floats
    step = max(1, min(256, 2**26 // max(1, int(np.prod(batches.shape[1:])))))
    for start in range(0, len(images), step):
        batch = torch.tensor(batches[start:start + step], dtype=torch.float32)  # a copy: the file may be read-only
        resized = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + step] = resized.round().clamp(0, 255).to(torch.uint8).numpy()
    return out[:, 0] if grey else out
