"""A CSV manifest: columns path, label, and optionally patient_id and split; paths relative to the CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medablate.data import cache
from medablate.data.sources import DataSource, image_folder, register_source
from medablate.data.sources.image_folder import decode_all
from medablate.data.types import ImageSet

if TYPE_CHECKING:
    from medablate.config.schema import DataConfig, TestConfig
from medablate.errors import UserError

SPLITS = ("train", "val", "test")


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise UserError(f"manifest {path} does not exist: set data.path to a CSV with columns path,label "
                        "(and optionally patient_id, split).")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UserError(f"manifest {path}, line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text: save the CSV as "
                        "UTF-8 (spreadsheet programs offer 'CSV UTF-8').") from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise UserError(f"manifest {path}, line {line} holds a NUL byte: it is not a text CSV (or is damaged); write it "
                        "again as a plain UTF-8 CSV with columns path,label.")
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"manifest {path} has no column(s) {sorted(missing)}; its columns are {reader.fieldnames}. "
                            "It needs path and label (patient_id and split are optional).")
        rows = list(reader)
    if not rows:
        raise UserError(f"manifest {path} lists no images.")
    return rows


def load(path: Path, image_size: int, classes: list[str] | None = None) -> ImageSet:
    path = Path(path)
    rows = read_rows(path)
    names = list(classes) if classes else sorted({r["label"] for r in rows})
    files = []
    for line, row in enumerate(rows, start=2):
        if not (row.get("path") or "").strip() or not (row.get("label") or "").strip():
            blank = "path" if not (row.get("path") or "").strip() else "label"
            raise UserError(f"manifest {path}, line {line}: the {blank} is empty: give every row a path and a label "
                            "(or remove the row).")
        file = (path.parent / row["path"]).resolve()
        if not file.is_file():
            raise UserError(f"manifest {path}, line {line}: image {row['path']} does not exist (paths are relative to "
                            "the manifest's folder).")
        if row["label"] not in names:
            raise UserError(f"manifest {path}, line {line}: label '{row['label']}' is not among the classes {names}: "
                            "fix the label or data.classes.")
        if row.get("split") and row["split"] not in SPLITS:
            raise UserError(f"manifest {path}, line {line}: split '{row['split']}' is not one of {list(SPLITS)}.")
        files.append(file)
    if len(names) < 2:
        raise UserError(f"manifest {path} has only the class {names}: a classifier needs at least two.")
    labels = np.array([names.index(r["label"]) for r in rows], dtype=np.int64)

    def build() -> ImageSet:
        return ImageSet(decode_all(files, image_size), labels, [r["path"] for r in rows], names, "manifest")

    key = cache.source_key(Path("/"), files, {"source": "manifest", "size": image_size, "rows": rows,
                                                   "intensity": image_folder.INTENSITY_VERSION})
    data = cache.cached(key, build)
    data.labels, data.class_names = labels, names
    if any(r.get("patient_id") for r in rows):
        data.patients = [r.get("patient_id") or r["path"] for r in rows]
    filled = [number for number, r in enumerate(rows, start=2) if r.get("split")]
    if filled and len(filled) < len(rows):
        empty = [number for number, r in enumerate(rows, start=2) if not r.get("split")]
        raise UserError(f"manifest {path}: the split column is filled in {len(filled)} rows and empty in {len(empty)} "
                        f"(lines {', '.join(map(str, empty[:5]))}{' ...' if len(empty) > 5 else ''}): fill it in every "
                        "row (train, val or test) or in none, so medablate makes the split.")
    if filled:
        data.preset = np.array([r["split"] for r in rows], dtype=object)
    return data


def _load(config: DataConfig) -> ImageSet:
    if config.path is None:
        raise UserError("data.source is manifest but data.path is not set: set data.path to the CSV.")
    return load(config.path, config.image_size, config.classes)


def _load_test(data: DataConfig, test: TestConfig, class_names: list[str]) -> ImageSet:
    if test.path is None:
        raise UserError("the manifest source holds no test split of its own here: give its rows split=test, set "
                        "test.path, or drop the test set with --set test=null.")
    return load(test.path, data.image_size, class_names)


register_source(DataSource(
    "manifest", "a CSV with `path`, `label`, optional `patient_id`, `split` (paths relative to the CSV)",
    "`patient_id` column", "images or DICOM files", _load, _load_test,
    detect=lambda path, files: path.is_file() and path.suffix.lower() == ".csv", rank=30))
