"""DICOM images (pydicom): modality LUT (rescale slope/intercept), VOI LUT or window, MONOCHROME1 inverted,
scaled to 8 bits. Labels come from class folders (or a manifest); the patient from the PatientID tag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medablate.errors import UserError

EXTENSIONS = {".dcm", ".dicom"}


def is_dicom(path: Path) -> bool:
    return Path(path).suffix.lower() in EXTENSIONS


def to_uint8(path: Path) -> np.ndarray:
    """The displayed grey image of a DICOM file as uint8, the way a viewer would show it."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(path)
    except Exception as exc:
        raise UserError(f"DICOM file {path} could not be read ({exc}): replace or remove it.") from None
    if "PixelData" not in dataset:
        raise UserError(f"DICOM file {path} has no pixel data (it may be a report or a structured document): "
                        "remove it from the image folder.")
    try:
        values = apply_voi_lut(apply_modality_lut(dataset.pixel_array, dataset), dataset).astype(np.float64)
    except Exception as exc:
        raise UserError(f"DICOM file {path}: its pixels could not be decoded ({exc}).") from None
    if values.ndim != 2:
        raise UserError(f"DICOM file {path} holds {values.shape} pixels; medablate reads single grey 2-D images.")
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    if getattr(dataset, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        scaled = 255 - scaled  # MONOCHROME1: low values are bright
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def decode(path: Path, size: int) -> np.ndarray:
    pixels = to_uint8(path)
    if pixels.shape != (size, size):
        pixels = np.array(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
    return pixels


def patient_id(path: Path, tag: str = "PatientID") -> str:
    import pydicom

    dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[tag])
    value = str(getattr(dataset, tag, "") or "")
    if not value:
        raise UserError(f"DICOM file {path} has no {tag}: the split cannot group it by patient.")
    return value
