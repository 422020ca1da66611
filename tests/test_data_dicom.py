"""DICOM files written with pydicom itself: both photometric interpretations, 12- and 16-bit, rescale and window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medablate.config.schema import DataConfig, SplitConfig
from medablate.data import dicom, load_data
from medablate.data.split import make_split
from medablate.errors import UserError


def write_dicom(path: Path, pixels: np.ndarray, bits: int = 16, photometric: str = "MONOCHROME2",
                patient: str = "P1", slope: float = 1.0, intercept: float = 0.0,
                window: tuple[float, float] | None = None, with_pixels: bool = True) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = patient, "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(bits: int) -> np.ndarray:
    return np.tile(np.linspace(0, 2**bits - 1, 16).astype(np.uint16), (16, 1))


@pytest.mark.parametrize("bits", [12, 16])
def test_bit_depths_scale_to_the_full_8_bit_range(tmp_path: Path, bits: int) -> None:
    pixels = dicom.to_uint8(write_dicom(tmp_path / "a.dcm", ramp(bits), bits=bits))
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    assert np.all(np.diff(pixels[0].astype(int)) >= 0)  # the ramp stays a ramp


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    two = dicom.to_uint8(write_dicom(tmp_path / "m2.dcm", ramp(12), bits=12))
    one = dicom.to_uint8(write_dicom(tmp_path / "m1.dcm", ramp(12), bits=12, photometric="MONOCHROME1"))
    assert np.array_equal(one.astype(int), 255 - two.astype(int))


def test_window_in_rescaled_units_clips(tmp_path: Path) -> None:
    # stored 0..4095, rescaled to -1024..3071 (CT-like); a window of 0..1000 saturates everything outside it
    path = write_dicom(tmp_path / "w.dcm", ramp(12), bits=12, slope=1.0, intercept=-1024, window=(500, 1000))
    pixels = dicom.to_uint8(path)
    values = ramp(12)[0].astype(float) - 1024
    assert (pixels[0][values <= 0] == 0).all() and (pixels[0][values >= 1000] == 255).all()
    inside = pixels[0][(values > 0) & (values < 1000)]
    assert len(inside) and ((inside > 0) & (inside < 255)).all()


def test_dicom_folder_with_labels_from_folders_and_patient_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("NORMAL", "PNEUMONIA"):
        for i in range(6):
            write_dicom(tmp_path / "dcm" / label / f"{i}.dcm", rng.integers(0, 4096, (20, 20)), bits=12,
                        patient=f"{label[0]}{i // 2}")
    data = load_data(DataConfig(path=tmp_path / "dcm", image_size=16))
    assert data.source == "dicom" and data.images.shape == (12, 1, 16, 16)
    assert data.patients[:3] == ["N0", "N0", "N1"]
    split = make_split(data, SplitConfig(method="stratified", val_fraction=0.34, group_by={"dicom": "PatientID"}))
    sides: dict[str, set] = {}
    for patient, side in zip(data.patients, split):
        sides.setdefault(patient, set()).add(side)
    assert all(len(s) == 1 for s in sides.values())


def test_dicom_without_pixel_data_is_named(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "report.dcm", ramp(12), with_pixels=False)
    with pytest.raises(UserError, match="report.dcm has no pixel data"):
        dicom.to_uint8(path)
