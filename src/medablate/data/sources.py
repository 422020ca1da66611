"""The catalogue of data sources: each source module registers itself here (name, layout, what it knows of
patients, how to detect it, how to load its training and test data). The catalogue feeds config validation
(`data.source`), auto-detection, the CLI's `--source` choices and the README's table
(`python -m medablate.data.sources` prints it), so adding a source is one new module listed in MODULES.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from medablate.config import DataConfig, TestConfig
    from medablate.data.types import ImageSet

MODULES = ("npy_pair", "image_folder", "manifest", "medmnist", "phantom")  # detection and the table follow this order


@dataclass(frozen=True)
class DataSource:
    name: str
    layout: str  # what data.path holds (README table)
    patients: str  # where patient ids come from, or "no"
    notes: str
    load: Callable[["DataConfig"], "ImageSet"]
    load_test: Callable[["DataConfig", "TestConfig", list[str]], "ImageSet"]
    detect: Callable[[Path, list[str]], bool] | None = None  # may `auto` pick it for this data.path?
    real: bool = True  # False: generated images (not for `evaluate --source`)
    # what a load would find, without decoding: images per class per split ("all" when unsplit), for --dry-run
    index: Callable[["DataConfig"], dict[str, dict[str, int]]] | None = None


REGISTRY: dict[str, DataSource] = {}


def register_source(source: DataSource) -> DataSource:
    REGISTRY[source.name] = source
    return source


def all_sources() -> dict[str, DataSource]:
    """Every registered source, in detection order."""
    for module in MODULES:
        importlib.import_module(f"medablate.data.{module}")
    ranked = {module: i for i, module in enumerate(MODULES)}
    return dict(sorted(REGISTRY.items(), key=lambda item: ranked.get(_module_of(item[1]), len(MODULES))))


def _module_of(source: DataSource) -> str:
    return getattr(source.load, "__module__", "").rsplit(".", 1)[-1]


def names() -> list[str]:
    return list(all_sources())


def table() -> str:
    """The README's table of sources."""
    rows = ["| source | layout | patients | notes |", "|---|---|---|---|"]
    rows += [f"| `{s.name}` | {s.layout} | {s.patients} | {s.notes} |" for s in all_sources().values()]
    return "\n".join(rows)


if __name__ == "__main__":  # run as a script this module is __main__: ask the package's own copy
    from medablate.data import sources as catalogue

    print(catalogue.table())
