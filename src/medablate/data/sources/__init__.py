"""The catalogue of data sources: each source module registers itself here (name, layout, what it knows of
patients, how to detect it, how to load its training and test data). The catalogue feeds config validation
(`data.source`), auto-detection, the CLI's `--source` choices and the README's table
(`python -m medablate.data.sources` prints it), so adding a source is one new module in this folder: the
catalogue finds it (medablate.core.registry) and its `rank` places it in detection and in the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medablate.core.registry import SOURCES

if TYPE_CHECKING:
    from medablate.config.schema import DataConfig, TestConfig
    from medablate.data.types import ImageSet

@dataclass(frozen=True)
class DataSource:
    name: str
    layout: str  # what data.path holds (README table)
    patients: str  # where patient ids come from, or "no"
    notes: str
    load: Callable[[DataConfig], ImageSet]
    load_test: Callable[[DataConfig, TestConfig, list[str]], ImageSet]
    detect: Callable[[Path, list[str]], bool] | None = None  # may `auto` pick it for this data.path?
    real: bool = True  # False: generated images (not for `evaluate --source`)
    # what a load would find, without decoding: images per class per split ("all" when unsplit), for --dry-run
    index: Callable[[DataConfig], dict[str, dict[str, int]]] | None = None
    rank: int = 100  # detection and the table follow the ranks (npy-pair 10, image folders 20, ...)


def register_source(source: DataSource) -> DataSource:
    return SOURCES.register(source.name, source)


def all_sources() -> dict[str, DataSource]:
    """Every registered source, in detection order."""
    return dict(sorted(SOURCES.entries().items(), key=lambda item: item[1].rank))


def names() -> list[str]:
    return list(all_sources())


def table() -> str:
    """The README's table of sources."""
    rows = ["| source | layout | patients | notes |", "|---|---|---|---|"]
    rows += [f"| `{s.name}` | {s.layout} | {s.patients} | {s.notes} |" for s in all_sources().values()]
    return "\n".join(rows)
