"""Plugins that register themselves: a data source or a model is one file in its package, found by looking.

The first look-up imports every module of the registry's package (pkgutil), so the lower layers (config's
validation, the CLI's choices) can list what the upper ones provide without importing them by name, and adding a
plugin never means editing a list somewhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str) -> None:
        self.kind, self.package = kind, package
        self._entries: dict[str, T] = {}
        self._found = False

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def entries(self) -> dict[str, T]:
        """Every registered entry, in the order the package's modules were imported (alphabetical on first use)."""
        if not self._found:
            self._found = True
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                if module.name.startswith("_"):
                    continue  # __main__ and private helpers
                importlib.import_module(f"{self.package}.{module.name}")
        return dict(self._entries)

    def names(self) -> list[str]:
        return list(self.entries())


SOURCES: Registry = Registry("data source", "medablate.data.sources")
MODELS: Registry = Registry("model", "medablate.models")
EXECUTORS: Registry = Registry("executor", "medablate.execute.executors")
