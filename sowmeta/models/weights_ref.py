"""Where weights come from, written portably: ``hf://ORG/NAME[@REV]/FILE`` on the Hub, a torchvision enum, or a file.

``resolve`` turns a user's ``--weights`` into a local file (downloading ``hf://`` references
through sowmeta's Hub client); ``portable`` is what a manifest records: the Hub reference with
its commit, or a local file's name only (with its sha256 beside it) — never a machine's path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..atomic import sha256_file
from ..errors import ChecksumError, WeightsError

__all__ = ["WeightsRef", "resolve_weights", "parse_hf_ref", "HF_PREFIX"]

HF_PREFIX = "hf://"
_HF_RE = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w.-]+))?/(?P<file>[\w./-]+)$")


def parse_hf_ref(ref: str) -> tuple[str, str | None, str]:
    """``hf://ORG/NAME[@REV]/FILE`` -> (repo, revision or None, file path in the repository)."""
    match = _HF_RE.match(ref)
    if match is None or ".." in match.group("file").split("/"):
        raise WeightsError(f"{ref!r} is not a Hub weights reference; write hf://ORG/NAME[@REVISION]/FILE")
    return match.group("repo"), match.group("rev"), match.group("file")


@dataclass(frozen=True)
class WeightsRef:
    """A weights file at hand: its local path, what a manifest records for it, and its sha256."""

    path: Path
    portable: str
    sha256: str


def resolve_weights(weights: str, *, expect_sha256: str | None = None) -> WeightsRef:
    """A local file for ``weights`` (a path or an ``hf://`` reference), checked against ``expect_sha256`` if given."""
    if weights.startswith(HF_PREFIX):
        from ..hub.client import commit_of, fetch_file

        repo, rev, filename = parse_hf_ref(weights)
        path = fetch_file(repo, filename, revision=rev)
        portable = f"{HF_PREFIX}{repo}@{commit_of(path) or rev or 'main'}/{filename}"
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file {weights!r} does not exist; pass an existing file, DEFAULT, or none")
        portable = path.name
    digest = sha256_file(path)
    if expect_sha256 is not None and digest != expect_sha256:
        raise ChecksumError(
            f"weights {portable} have sha256 {digest[:12]}..., the bundle recorded {expect_sha256[:12]}...: "
            "these are not the weights the statistics were recorded with"
        )
    return WeightsRef(path, portable, digest)
