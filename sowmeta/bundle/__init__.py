"""The bundle: a model's class-conditional statistics as a directory of safetensors files and a manifest.

``bundle.py`` holds the values (``Bundle``: load, save, check), ``manifest.py`` the records of
``sowmeta.json``, ``files.py`` the safetensors files, ``rules.py`` the format's rules on the
numbers, ``check.py`` whether a model is the one a bundle was recorded on, and ``model.py`` the
model a manifest names, built without trusting it. docs/format.md is the specification. Names
are imported on first use, so ``import sowmeta`` (which connects ``pretrained.py``) loads no torch.
"""

from __future__ import annotations

from ..lazy import exports

_HOME = {
    "Bundle": ".bundle",
    "DEFAULT_SHARD_BYTES": ".bundle",
    "FORMAT_NAME": ".manifest",
    "FORMAT_VERSION": ".manifest",
    "MANIFEST_NAME": ".manifest",
    "FileRecord": ".manifest",
    "Manifest": ".manifest",
    "ModelRecord": ".manifest",
    "SourceRecord": ".manifest",
    "TapRecord": ".manifest",
    "read_manifest": ".manifest",
    "TapStats": ".files",
    "verify_files": ".files",
    "check_model": ".check",
    "load_model_for": ".model",
    "summarize": ".summary",
}

__all__ = list(_HOME)
__getattr__, __dir__ = exports(__name__, _HOME, globals())
