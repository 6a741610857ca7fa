"""Which registry a bundle name goes to, and turning a bundle reference into a directory.

The rule, first match wins:

1. the ``registry=`` argument (CLI ``--registry``): ``"hub"``, ``"local"`` or a directory
   (a local registry there);
2. the ``SOWMETA_REGISTRY`` environment variable, with the same three forms;
3. the local registry in ``<SOWMETA_CACHE>/registry``.

Setting ``HF_ENDPOINT`` or ``HF_TOKEN`` alone never switches to the Hub: they only configure it.
A reference is an existing directory (used as is, whatever the registry), ``ORG/NAME`` (revision
main) or ``ORG/NAME@REVISION``; names are pulled on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import env
from ..errors import BundleNotFoundError, ConfigError
from .records import PullResult, check_name, split_ref

__all__ = ["Backend", "choose_backend", "resolve_bundle", "locate_bundle"]


@dataclass(frozen=True)
class Backend:
    """A chosen registry: ``kind`` is ``"hub"`` or ``"local"``; ``root`` is the local registry directory."""

    kind: str
    root: Path | None = None
    why: str = "default"


def _parse(value: str | Path, why: str) -> Backend:
    text = str(value).strip()
    if not text:
        raise ConfigError(f"empty registry ({why}); use 'hub', 'local' or a directory")
    if text == "hub":
        return Backend("hub", None, why)
    if text == "local":
        return Backend("local", env.registry_dir(), why)
    root = Path(text).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"registry {text!r} ({why}) is a file; pass 'hub', 'local' or a directory for the local registry")
    return Backend("local", root, why)


def choose_backend(registry: str | Path | None = None) -> Backend:
    """Apply the rule: ``registry`` argument, then ``SOWMETA_REGISTRY``, then the default local registry."""
    if registry is not None:
        return _parse(registry, "registry argument")
    value = env.registry_choice()
    if value:
        return _parse(value, "SOWMETA_REGISTRY")
    return Backend("local", env.registry_dir(), "default")


def resolve_bundle(ref: str | Path, *, registry: str | Path | None = None, revision: str | None = None) -> Path:
    """The bundle directory for ``ref``: an existing directory, ``ORG/NAME`` or ``ORG/NAME@REVISION``.

    A directory is returned as is (``Bundle.load`` checks it). Names are pulled and verified from
    the registry chosen by ``choose_backend(registry)``: the Hub caches downloads, the local registry
    returns the stored revision in place.

    Example:
        >>> resolve_bundle("bundles/resnet56")                # a directory
        >>> resolve_bundle("sowmeta/cifar-resnet56@v1", registry="hub")
    """
    return locate_bundle(ref, registry=registry, revision=revision).path


def locate_bundle(ref: str | Path, *, registry: str | Path | None = None, revision: str | None = None) -> PullResult:
    """Like ``resolve_bundle``, with what the reference resolved to: name, revision and commit.

    For a directory, ``name`` is the directory, ``revision`` and ``commit`` are empty and
    ``backend`` is ``"directory"``.
    """
    text = str(ref)
    if Path(text).is_dir():
        if revision is not None:
            raise ConfigError(f"{text} is a directory; a revision only applies to registry names (ORG/NAME@REV)")
        return PullResult(text, "", "", Path(text), "directory")
    try:
        check_name(text.partition("@")[0])
    except ConfigError:
        raise BundleNotFoundError(
            f"{text} is neither a bundle directory nor a registry name ORG/NAME[@REVISION]", path=text
        ) from None
    name, rev = split_ref(text, revision)
    from . import pull

    return pull(name, revision=rev, registry=registry)
