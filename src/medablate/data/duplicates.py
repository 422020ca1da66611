"""Exact duplicates (same decoded pixels) across splits: keep each in its earliest split only. In a k-fold
pool (split 'cv') every image validates in some fold, so a repeat within the pool is removed as well."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from medablate.data.split import CV, TRAIN, VAL
from medablate.data.types import ImageSet

ORDER = {TRAIN: 0, CV: 0, VAL: 1, "test": 2}


def pixel_hashes(data: ImageSet) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(image).data).hexdigest() for image in data.images]


@dataclass
class Duplicates:
    keep: np.ndarray  # per training-data image
    test_keep: np.ndarray | None  # per test image
    dropped: dict[str, int] = field(default_factory=dict)  # split -> images removed
    groups: int = 0  # distinct images that occur more than once anywhere

    def as_dict(self) -> dict[str, object]:
        return {"removed": self.dropped, "duplicate_groups": self.groups}


def find_duplicates(data: ImageSet, split: np.ndarray, test: ImageSet | None,
                    hashes: list[str] | None = None) -> Duplicates:
    """Mark, for removal, every image whose pixels already occur in an earlier split (train < val < test)."""
    hashes = hashes if hashes is not None else pixel_hashes(data)
    entries = [(h, ORDER[s], "data", i) for i, (h, s) in enumerate(zip(hashes, split, strict=False))]
    if test is not None:
        entries += [(h, ORDER["test"], "test", i) for i, h in enumerate(pixel_hashes(test))]
    first_split: dict[str, int] = {}
    counts: dict[str, int] = {}
    for digest, order, _, _ in entries:
        first_split[digest] = min(order, first_split.get(digest, order))
        counts[digest] = counts.get(digest, 0) + 1
    keep = np.ones(len(data), bool)
    test_keep = np.ones(len(test), bool) if test is not None else None
    dropped = {TRAIN: 0, VAL: 0, "test": 0} | ({CV: 0} if (np.asarray(split) == CV).any() else {})
    names = {v: k for k, v in ORDER.items() if k != CV}
    in_pool: set[str] = set()
    for digest, order, where, index in entries:
        pool = where == "data" and split[index] == CV
        if order > first_split[digest] or (pool and digest in in_pool):
            (keep if where == "data" else test_keep)[index] = False  # type: ignore[index]
            dropped[CV if pool else names[order]] += 1
        elif pool:
            in_pool.add(digest)
    return Duplicates(keep, test_keep, dropped, sum(1 for c in counts.values() if c > 1))
