"""Publishing and fetching bundles: the Hugging Face Hub and a local registry.

``push``, ``pull`` and ``list_bundles`` go to the registry chosen by ``registry=`` (``"hub"``,
``"local"`` or a directory), else ``SOWMETA_REGISTRY``, else the local registry; see
``sowmeta.registry.resolve`` and docs/registry.md. ``list_bundles`` of the local registry also
lists the bundles pulled from the Hub into the cache.

Example:
    >>> from sowmeta.registry import push, pull
    >>> push("bundles/resnet56", "me/resnet56-sowmeta", registry="hub", license="mit")
    >>> pull("me/resnet56-sowmeta@v1", registry="hub").path
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .card import DEFAULT_LICENSE, render_card
from .records import BundleEntry, PullResult, PushResult, split_ref
from .resolve import Backend, choose_backend, locate_bundle, resolve_bundle

__all__ = [
    "push",
    "pull",
    "list_bundles",
    "resolve_bundle",
    "locate_bundle",
    "choose_backend",
    "render_card",
    "Backend",
    "PushResult",
    "PullResult",
    "BundleEntry",
]


def push(
    bundle_dir: str | Path,
    name: str,
    *,
    revision: str | None = None,
    private: bool = False,
    message: str | None = None,
    registry: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
) -> PushResult:
    """Publish the bundle at ``bundle_dir`` as ``name`` (``ORG/NAME``), moving ref/branch ``revision`` (default main).

    ``private`` and ``license`` (the model card's) apply to the Hub; ``private`` with the local
    registry is refused so that nobody believes a local push is private on the Hub.
    """
    backend = choose_backend(registry)
    if backend.kind == "hub":
        from . import hub

        return hub.push(bundle_dir, name, revision=revision, private=private, message=message, license=license)
    if private:
        raise ConfigError(
            f"--private applies to the Hub, but the local registry was chosen ({backend.why}); pass --registry hub"
        )
    from . import local

    return local.push(bundle_dir, name, revision=revision, message=message, root=backend.root)


def pull(
    name: str,
    *,
    revision: str | None = None,
    to: str | Path | None = None,
    registry: str | Path | None = None,
) -> PullResult:
    """Fetch and verify ``name`` (``ORG/NAME`` or ``ORG/NAME@REV``) at ``revision`` (default main).

    Returns the bundle directory in the registry's cache, or a copy in ``to`` (a new or empty directory).
    """
    name, rev = split_ref(name, revision)
    backend = choose_backend(registry)
    if backend.kind == "hub":
        from . import hub

        return hub.pull(name, revision=rev, to=to)
    from . import local

    return local.pull(name, revision=rev, to=to, root=backend.root)


def list_bundles(*, registry: str | Path | None = None, author: str | None = None) -> list[BundleEntry]:
    """What is at hand offline: every local revision, then every bundle pulled from the Hub into the cache.

    With the Hub chosen (``registry="hub"`` or ``SOWMETA_REGISTRY=hub``), the Hub's ``sowmeta``-tagged
    repositories instead (a network call). ``BundleEntry.backend`` tells ``local`` from ``hub-cache``.
    """
    backend = choose_backend(registry)
    from . import hub

    if backend.kind == "hub":
        return hub.list_bundles(author=author)
    from . import local

    entries = [*local.list_bundles(root=backend.root), *hub.list_cached()]
    return [e for e in entries if author is None or e.name.split("/")[0] == author]
