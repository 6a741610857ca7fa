"""Turning a bundle reference into a verified directory, once: an existing directory, or ``ORG/NAME[@REVISION]`` pulled on demand."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..bundle.files import verify_files
from ..bundle.manifest import read_manifest
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
    return _found(ref, registry, revision).path


def locate_bundle(ref: str | Path | PullResult, *, registry: str | Path | None = None, revision: str | None = None) -> PullResult:
    """``ref`` made a verified local directory, once: what every later stage of a run takes instead of the name.

    The result says what the reference resolved to (name, revision, commit) and holds the manifest,
    read and checked once: a name is pulled (the pull verifies every file), a directory's files are
    verified (``verify_files(cached=True)``: a file that passed before and has not changed since is
    not hashed again). For a directory, ``name`` is the directory, ``revision`` and ``commit`` are
    empty and ``backend`` is ``"directory"``. A ``PullResult`` is returned as it is (its manifest
    read, when a backend did not pass it on).
    """
    located = ref if isinstance(ref, PullResult) else _found(ref, registry, revision)
    if located.manifest is not None:
        return located
    manifest = read_manifest(located.path)
    verify_files(located.path, manifest, cached=True)
    return replace(located, manifest=manifest)


def _found(ref: str | Path, registry: str | Path | None, revision: str | None) -> PullResult:
    """A directory as it is, or a name pulled."""
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
