"""``Registry``: things found by name — models and model sources, tap presets, feature losses, registry backends.

One small type for all of them: registering a taken name is an error (pass ``replace=True``
to mean it), an unknown name gets a did-you-mean, and ``names("cifar-*")`` lists by glob.
The CLI reads its choices from these registries, so whatever Python registers is usable there.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from .errors import ConfigError, SowmetaError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of one kind by name, in registration order.

    Args:
        kind: what the items are, for messages ("feature loss", "tap preset").
        error: the ``SowmetaError`` raised for an unknown name.

    Example:
        >>> losses: Registry[Callable] = Registry("feature loss")
        >>> @losses.register("l1")
        ... def l1(a, b): ...
        >>> losses.get("l2")  # ConfigError: unknown feature loss 'l2'; did you mean 'l1'? (choose from l1)
    """

    def __init__(self, kind: str, *, error: type[SowmetaError] = ConfigError) -> None:
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str, item: None = None, *, replace: bool = False) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, item: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, item: T | None = None, *, replace: bool = False) -> T | Callable[[T], T]:
        """Add ``item`` under ``name`` (or, without ``item``, return a decorator that does)."""

        def add(value: T) -> T:
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"a {self.kind} needs a non-empty name, not {name!r}")
            if name in self._items and not replace:
                raise ConfigError(f"{self.kind} {name!r} is already registered; choose another name or pass replace=True")
            self._items[name] = value
            return value

        return add if item is None else add(item)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (an unknown name is an error)."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> T:
        """The item registered under ``name``; an unknown name raises ``error`` with the closest names."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self.error(self.unknown(name)) from None

    def unknown(self, name: object) -> str:
        """The one-line message for an unknown ``name``: did-you-mean, then the choices."""
        close = difflib.get_close_matches(str(name), list(self._items), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        choices = ", ".join(list(self._items)[:12]) + (", ..." if len(self._items) > 12 else "")
        return f"unknown {self.kind} {name!r}{hint} (choose from {choices})"

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the glob ``pattern``, in registration order."""
        return [n for n in self._items if fnmatch.fnmatchcase(n, pattern)]

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
