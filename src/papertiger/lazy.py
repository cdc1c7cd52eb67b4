"""Package attributes that import their module on first use (PEP 562).

A package lists where each lazy name lives and binds the two functions this
returns as its ``__getattr__`` and ``__dir__``::

    __getattr__, __dir__ = lazy_attributes(__name__, {"serve": ".backends"}, __all__)

The first access imports the module and caches the value in the package's
globals, so later accesses cost a dict lookup.  Type checkers see the names
through the package's own ``if TYPE_CHECKING:`` imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, homes: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose name ``n`` lives in the module
    ``homes[n]`` (relative to the package). O(1) per access after the first import."""
    names = set(public)

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home, package), name)
        vars(sys.modules[package])[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | names)

    return __getattr__, __dir__
