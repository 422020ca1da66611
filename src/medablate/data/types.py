"""The one in-memory form every data source returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageSet:
    """Grey uint8 images (N, H, W), integer labels (N,), and an id per image (file name or array index)."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    class_names: list[str]
    source: str
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    patients: list[str] | None = None  # per image, when the source knows them (manifest column, DICOM tag)
    preset: np.ndarray | None = None  # per image 'train' / 'val' / 'test', when the source comes split

    def __post_init__(self) -> None:
        assert self.images.dtype == np.uint8 and self.images.ndim == 3, (self.images.dtype, self.images.shape)
        assert len(self.images) == len(self.labels) == len(self.ids)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}

    def subset(self, keep: np.ndarray) -> "ImageSet":
        """The images where keep is True (same classes, source and notes)."""
        keep = np.asarray(keep, bool)
        pick = lambda values: [v for v, k in zip(values, keep) if k] if values is not None else None  # noqa: E731
        preset = self.preset[keep] if self.preset is not None else None
        return ImageSet(self.images[keep], self.labels[keep], pick(self.ids), self.class_names, self.source,
                        self.synthetic, list(self.notes), pick(self.patients), preset)

    def fingerprint(self) -> str:
        """sha256 of the pixels, labels and class names: equal exactly when the data is."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.images).data)
        digest.update(np.ascontiguousarray(self.labels.astype(np.int64)).data)
        digest.update("\0".join(self.class_names).encode())
        return digest.hexdigest()
