"""Publishing and fetching bundles: the Hugging Face Hub and a local registry.

``push``, ``pull`` and ``list_bundles`` go to the registry chosen by ``registry=`` (``"hub"``,
``"local"`` or a directory), else ``SOWMETA_REGISTRY``, else the local registry; see
``sowmeta.registry.resolve`` and docs/registry.md. ``list_bundles`` of the local registry also
lists the bundles pulled from the Hub into the cache.

Example:
    >>> from sowmeta.registry import push, pull
    >>> push("bundles/resnet56", "me/resnet56-sowmeta", registry="hub", license="mit")
    >>> pull("me/resnet56-sowmeta@v1", registry="hub").path
    >>> from_pretrained("me/resnet56-sowmeta@v1", classes=[3, 5])  # a Bundle of those classes
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..bundle import Bundle
from .backend import BACKENDS, Backend, choose_backend
from .card import DEFAULT_LICENSE, render_card
from .records import BundleEntry, PullResult, PushResult, split_ref
from .resolve import locate_bundle, resolve_bundle

__all__ = [
    "push",
    "pull",
    "from_pretrained",
    "list_bundles",
    "resolve_bundle",
    "locate_bundle",
    "choose_backend",
    "render_card",
    "Backend",
    "BACKENDS",
    "PushResult",
    "PullResult",
    "BundleEntry",
]


def push(
    bundle_dir: str | Path,
    name: str,
    *,
    revision: str | None = None,
    message: str | None = None,
    registry: str | Path | None = None,
    tag: str | None = None,
    private: bool = False,
    license: str = DEFAULT_LICENSE,
    update_model_card: bool = False,
    with_weights: str | Path | None = None,
    token: str | None = None,
) -> PushResult:
    """Publish the bundle at ``bundle_dir`` as ``name`` (``ORG/NAME[/SUBFOLDER]``), moving branch/ref ``revision`` (default main).

    ``tag`` also names the new revision, for good (tags never move). ``private``, ``license`` (the
    model card's), ``update_model_card`` (link a subfolder bundle from the model's own card),
    ``with_weights`` (upload the model's weights file beside a subfolder bundle) and ``token`` apply to the Hub; a local registry refuses them, so that nobody believes a local
    push is private on the Hub.
    """
    options = {"private": private, "license": license, "update_model_card": update_model_card, "with_weights": with_weights, "token": token}
    return choose_backend(registry).push(bundle_dir, name, revision=revision, message=message, tag=tag, **options)


def pull(
    name: str,
    *,
    revision: str | None = None,
    to: str | Path | None = None,
    registry: str | Path | None = None,
    token: str | None = None,
) -> PullResult:
    """Fetch and verify ``name`` (``ORG/NAME[/SUBFOLDER]``, optionally ``@REV``) at ``revision`` (default main).

    Returns the bundle directory in the registry's cache, or a copy in ``to`` (a new or empty
    directory). ``token`` is for private or gated Hub repositories.
    """
    name, rev = split_ref(name, revision)
    backend = choose_backend(registry)
    return backend.pull(name, revision=rev, to=to, token=token) if token is not None else backend.pull(name, revision=rev, to=to)


def list_bundles(*, registry: str | Path | None = None, author: str | None = None) -> list[BundleEntry]:
    """What the chosen registry holds: locally, every local revision and every bundle pulled from the Hub
    into the cache (no network); with the Hub, its ``sowmeta``-tagged repositories (a network call).
    ``BundleEntry.backend`` tells ``local``, ``hub-cache`` and ``hub`` apart.
    """
    return choose_backend(registry).list(author=author)


def from_pretrained(
    name: str,
    *,
    classes: Iterable[int | str] | None = None,
    taps: Iterable[str] | None = None,
    registry: str | Path | None = "hub",
    token: str | None = None,
) -> Bundle:
    """A bundle by registry name ``ORG/NAME[/SUBFOLDER][@REV]``, pulled and verified (from the Hub by default),
    with only the ``classes`` and ``taps`` asked for read (``Bundle.load``). ``Bundle.from_pretrained`` is this function.

    Example:
        >>> bundle = from_pretrained("me/cifar-resnet56/sowmeta", classes=[3, 5])
    """
    return Bundle.load(pull(name, registry=registry, token=token).path, classes=classes, taps=taps, verify=False)
