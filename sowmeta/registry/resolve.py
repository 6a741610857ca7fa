"""Turning a bundle reference into a directory: an existing directory, or ``ORG/NAME[@REVISION]`` pulled on demand."""

from __future__ import annotations

from pathlib import Path

from ..errors import BundleNotFoundError, ConfigError
from .backend import choose_backend
from .records import PullResult, check_name, split_ref

__all__ = ["resolve_bundle", "locate_bundle"]


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
    if not isinstance(ref, (str, Path)):
        raise ConfigError(f"a bundle is a directory or a registry name ORG/NAME[@REV], not a {type(ref).__name__}; pass the bundle first, then the model")
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
    return choose_backend(registry).pull(name, revision=rev)
