"""What was already verified, remembered under the cache directory so that loading a bundle does not re-hash it.

Two records, both small files under ``<cache>/verified/``:

* a **data file** is remembered by its identity (device, inode, size, mtime_ns and ctime_ns)
  with the sha256 and the manifest digest found in it by a full check. A later load trusts them
  only while the identity is unchanged. Any write through the file system changes ctime, and no
  program can set ctime back, so a file rewritten with the same size and its mtime restored is
  re-hashed. A file is remembered only when its timestamps are ``RACY_SECONDS`` older than the
  check (git's "racily clean" rule): a write in the same timestamp tick as the check could
  otherwise leave the identity unchanged.
* a **manifest** that passed the JSON Schema is remembered, per schema text, by the sha256 of
  the file it was read from (of its canonical content when it was not read from a file), so an
  unchanged manifest is not validated again (and the validator is not imported); beside it, the
  manifest's content digest, so that a load does not re-encode the manifest to compute it.

The cache is an optimization only: a record that cannot be read or written is ignored, and it
is trusted as much as the bundles cached next to it (docs/format.md, "Integrity").
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..env import cache_dir

__all__ = [
    "CheckedFile",
    "RACY_SECONDS",
    "recall_file",
    "remember_file",
    "schema_checked",
    "remember_schema_checked",
    "recall_digest",
    "remember_digest",
]

# Timestamps within this many seconds of the check are too fresh to vouch for the bytes (covers
# file systems that keep timestamps to the second, or to two seconds like FAT).
RACY_SECONDS = 2.5


@dataclass(frozen=True)
class CheckedFile:
    """What a full check found in one data file: the sha256 of its bytes and the manifest digest in its metadata."""

    sha256: str
    manifest_sha256: str | None


def _identity(st: os.stat_result) -> dict[str, int]:
    return {"device": st.st_dev, "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def _root() -> Path:
    return cache_dir() / "verified"


def _file_entry(st: os.stat_result) -> Path:
    key = hashlib.sha256(f"{st.st_dev}:{st.st_ino}".encode()).hexdigest()[:40]
    return _root() / "checked-files" / f"{key}.json"  # "files" held records made before every rule was checked


def _usable() -> bool:
    # ctime means "last change" only on POSIX systems (on Windows it is the creation time)
    return os.name == "posix"


def recall_file(st: os.stat_result) -> CheckedFile | None:
    """The record of the file with this ``stat``, if it was checked before and its identity is unchanged since."""
    if not _usable():
        return None
    try:
        data = json.loads(_file_entry(st).read_text(encoding="utf-8"))
        if data.get("identity") != _identity(st):
            return None
        return CheckedFile(str(data["sha256"]), data.get("manifest_sha256"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_file(before: os.stat_result, after: os.stat_result, record: CheckedFile, *, now: float | None = None) -> bool:
    """Remember a file checked in full between ``before`` and ``after`` (its ``stat`` then); False if not remembered.

    Not remembered: a file that changed while it was read, or whose timestamps are too recent.
    """
    if not _usable() or _identity(before) != _identity(after):
        return False
    newest = max(after.st_mtime_ns, after.st_ctime_ns) / 1e9
    if (time.time() if now is None else now) - newest < RACY_SECONDS:
        return False
    data = {"identity": _identity(after), "sha256": record.sha256, "manifest_sha256": record.manifest_sha256}
    return _write(_file_entry(after), json.dumps(data))


def _schema_entry(content: dict[str, object], schema_text: str, source_sha256: str | None) -> Path:
    schema_key = hashlib.sha256(schema_text.encode()).hexdigest()[:16]
    if source_sha256 is not None:  # the bytes it was parsed from name the content, without re-encoding it
        return _root() / f"schema-{schema_key}" / f"file-{source_sha256}"
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _root() / f"schema-{schema_key}" / hashlib.sha256(canonical.encode()).hexdigest()


def schema_checked(content: dict[str, object], schema_text: str, *, source_sha256: str | None = None) -> bool:
    """Whether a manifest with exactly this content (or parsed from a file with this sha256) passed this schema before."""
    try:
        return _schema_entry(content, schema_text, source_sha256).is_file()
    except (OSError, ValueError, TypeError):
        return False


def remember_schema_checked(content: dict[str, object], schema_text: str, *, source_sha256: str | None = None) -> None:
    """Record that a manifest with this content (or parsed from a file with this sha256) passed this schema."""
    try:
        _write(_schema_entry(content, schema_text, source_sha256), "")
    except (ValueError, TypeError):
        pass


def _digest_entry(source_sha256: str) -> Path:
    return _root() / "digests" / source_sha256


def recall_digest(source_sha256: str) -> str | None:
    """The content digest of the manifest file whose bytes have this sha256, if computed before."""
    try:
        text = _digest_entry(source_sha256).read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None


def remember_digest(source_sha256: str, digest: str) -> None:
    """Record the content digest of the manifest file whose bytes have this sha256."""
    _write(_digest_entry(source_sha256), digest)


def _write(path: Path, text: str) -> bool:
    """Write a record atomically (a temporary file renamed into place); False when the cache is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return True
    except OSError:
        return False
