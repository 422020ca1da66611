"""The one in-memory form every data source returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ImageSet:
    """uint8 images (N, C, H, W) (C = 1 for grey, 3 for RGB), integer labels (N,), and an id per image (file name or
    array index). Grey (N, H, W) arrays are given their channel axis on the way in (a view, no copy)."""

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
        if self.images.ndim == 3:
            self.images = self.images[:, None]
        assert self.images.dtype == np.uint8 and self.images.ndim == 4, (self.images.dtype, self.images.shape)
        assert len(self.images) == len(self.labels) == len(self.ids)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W), what a model takes."""
        return self.channels, *self.image_shape

    def with_channels(self, channels: int) -> ImageSet:
        """Grey repeated to 3 channels, or RGB to grey (ITU-R 601 luma, as Pillow's convert('L'))."""
        if channels == self.channels:
            return self
        if channels == 3:
            images = np.repeat(self.images, 3, axis=1)
        else:
            weights = np.array([299, 587, 114], dtype=np.uint32)[None, :, None, None]
            images = ((self.images.astype(np.uint32) * weights).sum(1, keepdims=True) // 1000).astype(np.uint8)
        return ImageSet(images, self.labels, self.ids, self.class_names, self.source, self.synthetic,
                        list(self.notes), self.patients, self.preset)

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}

    def subset(self, keep: np.ndarray) -> ImageSet:
        """The images where keep is True (same classes, source and notes)."""
        keep = np.asarray(keep, bool)
        pick: Any = lambda values: [v for v, k in zip(values, keep, strict=False) if k] if values is not None else None  # noqa: E731
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
