"""The bundles pulled from the Hub into the standard Hugging Face cache, listed without the network."""

from __future__ import annotations

import datetime as _dt

from huggingface_hub import errors as hf
from huggingface_hub import scan_cache_dir

from .. import env
from ..bundle.manifest import MANIFEST_NAME
from .records import DEFAULT_REF, BundleEntry

__all__ = ["list_cached"]


def list_cached() -> list[BundleEntry]:
    """The bundle revisions pulled from the Hub into the standard Hugging Face cache, subfolders included; no network."""
    cache = env.hf_hub_cache()
    if not cache.is_dir():
        return []
    try:
        info = scan_cache_dir(cache)
    except hf.CacheNotFound:
        return []
    entries = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for r in repo.revisions:
            when = _dt.datetime.fromtimestamp(r.last_modified, _dt.timezone.utc).replace(microsecond=0)
            for manifest in sorted(r.snapshot_path.glob("**/" + MANIFEST_NAME)):
                sub = manifest.parent.relative_to(r.snapshot_path).as_posix()
                entries.append(BundleEntry(
                    name=repo.repo_id if sub == "." else f"{repo.repo_id}/{sub}", commit=r.commit_hash, backend="hub-cache",
                    refs=tuple(sorted(r.refs, key=lambda x: (x != DEFAULT_REF, x))), path=manifest.parent,
                    updated=when.isoformat().replace("+00:00", "Z"),
                ))
    entries.sort(key=lambda e: e.updated or "", reverse=True)
    return sorted(entries, key=lambda e: e.name)  # stable: by name, newest first within a name
