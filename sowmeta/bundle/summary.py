"""A bundle's summary (model, classes, taps, counts, size) as plain data, for ``inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .bundle import Bundle

__all__ = ["summarize"]


def summarize(path: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Everything ``sowmeta inspect`` shows, from the manifest and the ``counts`` tensor (files verified first)."""
    path = Path(path)
    bundle = Bundle.load(path, taps=[], verify=verify)
    manifest = bundle.manifest
    d = manifest.to_dict()
    counts = bundle.counts.tolist()
    labels = manifest.model.labels
    return {
        "path": str(path),
        "verified": verify,
        "format_version": manifest.format_version,
        "model": d["model"],
        "source": d["source"],
        "preprocessing": d["preprocessing"],
        "dtype": manifest.dtype,
        "image_var": manifest.has_image_var,
        "images": int(sum(counts)),
        "classes": [
            {"index": i, "label": labels[i] if i < len(labels) else str(i), "images": int(c)} for i, c in enumerate(counts)
        ],
        "taps": [{"name": t.name, "kind": t.kind, "channels": t.channels, "axis": t.axis} for t in manifest.taps],
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in manifest.files],
        "size_bytes": sum(f.size for f in manifest.files),
        "created": manifest.created,
        "tool_version": manifest.tool_version,
    }
