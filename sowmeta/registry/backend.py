"""``Backend``: what a registry does (push, pull, list, resolve), and which one a name goes to.

The rule, first match wins:

1. the ``registry=`` argument (CLI ``--registry``): a registered backend name (``hub``,
   ``local``) or a directory (a local registry there; a new one is written as a path, ``./reg``,
   because a bare word that is no backend's name is taken for a mistyped one);
2. the ``SOWMETA_REGISTRY`` environment variable, with the same forms;
3. the local registry in ``<SOWMETA_CACHE>/registry``.

Setting ``HF_ENDPOINT`` or ``HF_TOKEN`` alone never switches to the Hub: they only configure it.
A new backend is a class with the four methods, registered in ``BACKENDS`` under its name
(docs/architecture.md).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .. import env
from ..errors import ConfigError
from ..named import Registry
from .records import BundleEntry, PullResult, PushResult

__all__ = ["Backend", "BACKENDS", "choose_backend"]


@runtime_checkable
class Backend(Protocol):
    """A registry of bundles. ``kind`` names it; ``why`` says how it was chosen (for messages)."""

    kind: str
    why: str

    def push(self, bundle_dir: str | Path, name: str, *, revision: str | None = None, message: str | None = None, **options: Any) -> PushResult:
        """Publish the bundle at ``bundle_dir`` as ``name``, moving ref ``revision`` (default main); refuse options it does not know."""

    def pull(self, name: str, *, revision: str | None = None, to: str | Path | None = None) -> PullResult:
        """A verified bundle directory for ``name@revision`` (a copy in ``to`` if given)."""

    def list(self, *, author: str | None = None) -> list[BundleEntry]:
        """The bundles this registry holds (of one user or organization)."""

    def resolve(self, name: str, revision: str | None = None) -> str:
        """The commit (Hub) or revision id (local) that ``name@revision`` points at now."""


# name -> factory(why) -> Backend; a value that names no backend is a local registry directory
BACKENDS: Registry[Callable[[str], Backend]] = Registry("registry backend")


def _hub(why: str) -> Backend:
    from .hub import HubRegistry

    return HubRegistry(why=why)


def _local(why: str) -> Backend:
    from .local import LocalRegistry

    return LocalRegistry(env.registry_dir(), why=why)


BACKENDS.register("hub", _hub)
BACKENDS.register("local", _local)


def _parse(value: str | Path, why: str) -> Backend:
    text = str(value).strip()
    names = ", ".join(repr(n) for n in BACKENDS.names())
    if not text:
        raise ConfigError(f"empty registry ({why}); use {names} or a directory")
    if text in BACKENDS:
        return BACKENDS.get(text)(why)
    root = Path(text).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"registry {text!r} ({why}) is a file; pass 'hub', 'local' or a directory for the local registry")
    if isinstance(value, str) and not root.exists() and "/" not in text and not text.startswith("~"):
        # a bare word is a backend's name mistyped far more often than a new folder in the current directory
        close = [n for n in BACKENDS.names() if n.casefold() == text.casefold()] or difflib.get_close_matches(text, BACKENDS.names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"registry {text!r} ({why}) names no backend ({names}) and no existing directory; {hint}"
                          f"for a new local registry folder here write ./{text}")
    from .local import LocalRegistry

    return LocalRegistry(root, why=why)


def choose_backend(registry: str | Path | None = None) -> Backend:
    """Apply the rule: ``registry`` argument, then ``SOWMETA_REGISTRY``, then the default local registry."""
    if registry is not None:
        return _parse(registry, "registry argument")
    value = env.registry_choice()
    if value:
        return _parse(value, "SOWMETA_REGISTRY")
    return _parse("local", "default")
