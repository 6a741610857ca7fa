"""What ``Bundle.from_pretrained`` calls: the registry's ``from_pretrained``, connected by the package.

A bundle named by a registry name is pulled and verified by the registry, which stands to this
room's right (it reads and checks bundle directories with this room's code), so this room never
imports it. ``sowmeta/__init__.py``, which runs before any sowmeta module, connects the two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

__all__ = ["connect", "fetch"]

_source: list[Callable[..., Any]] = []


def connect(source: Callable[..., Any]) -> None:
    """Make ``source(name, classes=, taps=, registry=, token=)`` the function ``fetch`` calls."""
    _source[:] = [source]


def fetch(name: str, **options: Any) -> Any:
    """A ``Bundle`` for the registry name ``name``, through the connected source."""
    if not _source:
        raise ConfigError("no registry is connected to sowmeta.bundle; call sowmeta.registry.from_pretrained instead")
    return _source[0](name, **options)
