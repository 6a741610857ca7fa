"""What the registry functions return, and the rules for bundle names and refs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..bundle.manifest import Manifest
from ..errors import ConfigError
from ..hub.names import PART, check_repo_id

__all__ = ["PushResult", "PullResult", "BundleEntry", "check_name", "check_repo_id", "check_ref", "split_ref", "repo_and_subfolder", "DEFAULT_REF"]

DEFAULT_REF = "main"

# A bundle name: a repository id, then optionally a subfolder of it (up to four path segments).
_NAME_RE = re.compile(rf"^{PART}/{PART}(?:/{PART}){{0,4}}$")
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class PushResult:
    """A published revision: ``name@revision`` now points at ``commit``."""

    name: str
    revision: str  # the ref that was updated (branch on the Hub, ref in the local registry)
    commit: str  # Hub commit hash, or local revision id (sha256 of manifest + files)
    backend: str  # "hub" or "local"
    path: Path | None = None  # where the local registry stored it
    url: str | None = None  # the Hub commit URL


@dataclass(frozen=True)
class PullResult:
    """A fetched and verified bundle directory, with its manifest as read and checked once (what later stages use)."""

    name: str
    revision: str  # what was asked for: a ref or a commit / revision id
    commit: str  # what it resolved to
    path: Path  # a verified bundle directory
    backend: str
    manifest: Manifest | None = field(default=None, repr=False, compare=False)  # None from a backend that does not pass it on


@dataclass(frozen=True)
class BundleEntry:
    """One bundle revision a registry holds (``refs`` empty when only its id reaches it)."""

    name: str
    commit: str | None
    backend: str  # "local" (local registry), "hub-cache" (pulled from the Hub) or "hub" (listed online)
    refs: tuple[str, ...] = field(default_factory=tuple)
    path: Path | None = None
    url: str | None = None
    updated: str | None = None
    private: bool | None = None


def check_name(name: str) -> str:
    """Return ``name`` if it is ``ORG/NAME[/SUBFOLDER]`` (the Hub's repo-id rules, then a plain subfolder), else raise ``ConfigError``."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or "--" in name or ".." in name:
        raise ConfigError(
            f"{name!r} is not a bundle name; use ORG/NAME or ORG/NAME/SUBFOLDER (letters, digits, '-', '_', '.'; no '--' or '..')"
        )
    return name


def repo_and_subfolder(name: str) -> tuple[str, str]:
    """``ORG/NAME/SUB`` -> (``ORG/NAME``, ``SUB``); ``ORG/NAME`` -> (``ORG/NAME``, ``""``)."""
    parts = check_name(name).split("/")
    return "/".join(parts[:2]), "/".join(parts[2:])


def check_ref(ref: str) -> str:
    """Return ``ref`` if it can name a branch/tag in both registries, else raise ``ConfigError``."""
    if not isinstance(ref, str) or not _REF_RE.match(ref) or ".." in ref:
        raise ConfigError(f"{ref!r} is not a revision name; use letters, digits, '-', '_', '.' (e.g. main, v1)")
    return ref


def split_ref(ref: str, revision: str | None = None) -> tuple[str, str | None]:
    """Split ``ORG/NAME[/SUB]@REV`` into (name, revision); ``revision=`` must agree with an ``@REV`` suffix."""
    name, at, rev = ref.partition("@")
    if at and not rev:
        raise ConfigError(f"{ref!r} ends with '@'; write ORG/NAME[/SUBFOLDER]@REVISION or leave out the '@'")
    if at and revision is not None and revision != rev:
        raise ConfigError(f"{ref!r} names revision {rev!r} but revision={revision!r} was also given; pass one")
    return check_name(name), (rev if at else revision)
