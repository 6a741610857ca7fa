"""The Hub's rule for repository ids (``ORG/NAME``), shared by bundle names and the models' base-model ids."""

from __future__ import annotations

import re

from ..errors import ConfigError

__all__ = ["PART", "check_repo_id"]

# One part of a repo id: letters, digits, '-', '_', '.'; starts and ends with a letter or digit; at most 96 characters.
PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_RE = re.compile(rf"^{PART}/{PART}$")


def check_repo_id(name: str) -> str:
    """Return ``name`` if it is a Hub repository id ``ORG/NAME`` (no '--' or '..'), else raise ``ConfigError``."""
    if not isinstance(name, str) or not _REPO_RE.match(name) or "--" in name or ".." in name:
        raise ConfigError(f"{name!r} is not a Hub repository id; use ORG/NAME")
    return name
