"""Lazy package façades (PEP 562): a package's public names, imported from their modules on first use.

A package whose modules sit in different layers (docs/architecture.md) keeps its ``__init__`` free
of eager imports: it lists its public names in ``_LAZY`` (name -> module, relative to the package)
and calls :func:`make_lazy`, so importing one low module of the package never loads the others.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class LazyPackage(types.ModuleType):
    """A package module whose ``_LAZY`` names are imported on first access. ``adaptermath.compose``,
    ``.sweep``, ``formats.convert`` and the other names that are also submodule names stay the
    functions: importing the submodule of the same name does not rebind them."""

    def __getattr__(self, name: str) -> Any:
        table = self.__dict__.get("_LAZY", {})
        if name not in table:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{table[name]}", self.__name__), name)
        self.__dict__[name] = value
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(self.__dict__.get("_LAZY", {})))

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and self.__dict__.get("_LAZY", {}).get(name) == name:
            return
        super().__setattr__(name, value)


def make_lazy(module_name: str) -> None:
    """Turn the (already imported) package ``module_name`` into a :class:`LazyPackage`."""
    sys.modules[module_name].__class__ = LazyPackage
