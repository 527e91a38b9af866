"""Lazy exports for the core packages' curated ``__init__`` modules (PEP 562).

A package lists ``name -> private module`` once; the module is imported the first time the
name is asked for. ``llcuda models ls`` then pays for the store and nothing else, and a
command's start-up does not grow with every package it could reach.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that resolves ``exports`` (name -> module in ``package``)."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(importlib.import_module(package), name, value)  # next time: a plain lookup
        return value

    return __getattr__
