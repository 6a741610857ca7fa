"""Packages whose public names are imported on first use (``__getattr__`` from a table of name -> module).

Used where a package must import cheaply: ``sowmeta`` itself (``import sowmeta.errors`` and the
CLI's ``--help`` load no torch), and the rooms whose light parts the CLI reads at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["exports"]


def exports(package: str, homes: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: name -> ``getattr(import_module(homes[name], package), name)``, kept once found.

    A home that names the attribute itself (``"errors": ".errors"``) is the module.
    """

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = import_module(home, package)
        value = module if home.rpartition(".")[2] == name else getattr(module, name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace.get("__all__", ()), *homes})

    return getattr_, dir_
