"""Load the JSON Schemas shipped in the wheel and validate manifests against them.

A manifest whose exact content passed the schema before (in this process or, through
``verified.py``, in an earlier one) is not validated again: the result would be the same,
and validating a 1000-class manifest costs tens of milliseconds, plus the validator's import.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import SchemaError

__all__ = ["load_schema", "validate_manifest"]


@lru_cache(maxsize=None)
def _schema_text(name: str) -> str:
    """The schema file's text: read beside this module where it is a folder (a first
    ``importlib.resources`` look-up costs milliseconds, a fair part of loading one class), else through it."""
    path = Path(__file__).with_name(f"{name}.schema.json")
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return resources.files(__package__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def load_schema(name: str = "bundle-v1") -> dict[str, Any]:
    """The schema ``<name>.schema.json`` shipped in this package (``sowmeta/bundle``; ``schemas/`` at the top of the repository holds the same file)."""
    return json.loads(_schema_text(name))


def validate_manifest(manifest: dict[str, Any], *, path: str | None = None, remember: bool = True, source_sha256: str | None = None) -> None:
    """Raise ``SchemaError`` naming the first violation of ``bundle-v1.schema.json``.

    With ``remember`` (the default), content that passed before is not validated again, and
    content that passes now is remembered (by ``source_sha256``, the sha256 of the file the
    manifest was parsed from, when given); ``remember=False`` always runs the validator.
    """
    from . import verified

    text = _schema_text("bundle-v1")
    if remember and verified.schema_checked(manifest, text, source_sha256=source_sha256):
        return
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema("bundle-v1"), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise SchemaError(f"manifest {path or ''} invalid at {where}: {err.message}".replace("  ", " "), path=path, rule="schema")
    if remember:
        verified.remember_schema_checked(manifest, text)
        if source_sha256 is not None:
            verified.remember_schema_checked(manifest, text, source_sha256=source_sha256)
