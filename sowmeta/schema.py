"""Load the JSON Schemas shipped in the wheel and validate manifests against them."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from .errors import SchemaError

__all__ = ["load_schema", "validate_manifest"]


@lru_cache(maxsize=None)
def load_schema(name: str = "bundle-v1") -> dict[str, Any]:
    """The schema ``<name>.schema.json`` from the installed ``sowmeta.schemas`` package."""
    text = resources.files("sowmeta.schemas").joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_manifest(manifest: dict[str, Any], *, path: str | None = None) -> None:
    """Raise ``SchemaError`` naming the first violation of ``bundle-v1.schema.json``."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema("bundle-v1"), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise SchemaError(f"manifest {path or ''} invalid at {where}: {err.message}".replace("  ", " "), path=path)
