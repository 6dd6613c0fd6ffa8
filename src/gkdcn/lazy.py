"""Lazy public names of a package (PEP 562): imported from their modules on first access.

The front door (:mod:`gkdcn`) and :mod:`gkdcn.compare` name many functions whose modules pull in
torch, matplotlib or geopandas; listing them in a table and importing each on first use keeps
``import gkdcn`` and ``import gkdcn.compare.layout`` light. This module imports nothing of gkdcn.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_names(
    package: str, table: Mapping[str, str], namespace: MutableMapping[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    Parameters
    ----------
    package
        The package's ``__name__`` (for the error message).
    table
        Public name -> the module that defines it.
    namespace
        The package's ``globals()``: a name, once imported, is stored there, so later accesses
        no longer reach ``__getattr__``.

    Returns
    -------
    tuple of callables
        ``(__getattr__, __dir__)``, to assign at the package's top level.
    """

    def getattr_(name: str) -> Any:
        try:
            module = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted([*namespace, *table])

    return getattr_, dir_
