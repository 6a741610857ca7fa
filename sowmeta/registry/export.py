"""A verified bundle copied out of a registry into a directory of the user's (``pull --to``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..atomic import atomic_dir
from ..bundle.manifest import MANIFEST_NAME, Manifest
from ..errors import OutputExistsError
from ..outputs import check_output

__all__ = ["CARD_NAME", "export_bundle"]

CARD_NAME = "README.md"


def export_bundle(src: Path, manifest: Manifest, to: str | Path) -> Path:
    """Copy a verified bundle (manifest, files, and README.md if present) to a new or empty directory ``to``."""
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise OutputExistsError(f"{to} exists and is not an empty directory; choose another --to or remove it")
    check_output(to, "bundle", overwrite=True, what="--to")
    names = [MANIFEST_NAME, *(f.name for f in manifest.files)]
    if (src / CARD_NAME).is_file():
        names.append(CARD_NAME)
    with atomic_dir(to, overwrite=True) as tmp:
        for n in names:
            shutil.copyfile(src / n, tmp / n)
    return to
