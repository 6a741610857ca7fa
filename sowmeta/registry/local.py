"""The local registry: immutable, content-addressed bundle revisions and named refs in one directory.

Layout (``root`` is ``sowmeta.env.registry_dir()`` unless given)::

    root/
      ORG/NAME/
        revisions/<id>/   sowmeta.json + the manifest's .safetensors files; never changed once written
        refs/<ref>        a text file holding one revision id (main, v1, ...)
        log.jsonl         one JSON line per push: time, ref, revision, previous revision, message
        .lock             held while a push installs a revision and moves a ref
      .tmp/               copies in progress (removed when a push fails; a killed push's
                          copy is swept by the first push a day later)

A revision id is the sha256 of ``sowmeta-revision-v1\\n``, the manifest's bytes, then one line
``NAME SHA256\\n`` per data file in manifest order. The files are checked against those digests
while they are copied, so an id always names exactly those bytes; pushing the same bundle twice
stores it once. A push copies into ``.tmp``, renames the copy into ``revisions/`` and only then
rewrites the ref (write to a temporary file + ``os.replace``), all under a per-bundle file lock:
a reader sees the old revision or the new one, and a failed push leaves the refs as they were.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from filelock import FileLock, Timeout

from ..atomic import atomic_file, publish_modes
from ..bundle import MANIFEST_NAME, Bundle, FileRecord, Manifest, verify_files
from ..bundle.manifest import now
from ..bundle.files import check_contained
from ..env import registry_dir
from ..errors import (
    BundleError,
    BundleNotFoundError,
    ChecksumError,
    ConfigError,
    CorruptBundleError,
    NotFoundError,
    RegistryError,
    RevisionNotFoundError,
    SchemaError,
)
from .export import export_bundle
from .hub_cache import list_cached
from .records import DEFAULT_REF, BundleEntry, PullResult, PushResult, check_name, check_ref, repo_and_subfolder

__all__ = ["LocalRegistry", "push", "pull", "list_bundles", "revision_id", "LOCK_TIMEOUT_S"]

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 120.0
STALE_TMP_S = 24 * 3600.0  # a staged copy this old belongs to a push that was killed
_HEX_RE = re.compile(r"^[0-9a-f]{7,64}$")
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


_SUB = "_sub"  # a subfolder bundle ORG/NAME/SUB lives in ORG/NAME/_sub/SUB ("_sub" is no valid name part)


def _repo_dir(base: Path, name: str) -> Path:
    """Where the bundle ``ORG/NAME[/SUB]`` is stored."""
    repo, sub = repo_and_subfolder(name)
    return base / repo / _SUB / sub if sub else base / repo


def _name_of(base: Path, repo_dir: Path) -> str:
    parts = repo_dir.relative_to(base).parts
    return "/".join(p for p in parts if p != _SUB)


def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else registry_dir()


def revision_id(manifest_bytes: bytes, files: list[FileRecord]) -> str:
    """The content address of a bundle: sha256 over the manifest bytes and each file's name and sha256."""
    h = hashlib.sha256(b"sowmeta-revision-v1\n")
    h.update(manifest_bytes)
    h.update(b"\n")
    for f in files:
        h.update(f"{f.name} {f.sha256}\n".encode())
    return h.hexdigest()


def _copy_file(src: Path, dst: Path, record: FileRecord) -> None:
    """Copy one data file, hashing it on the way; raise ``ChecksumError`` unless it matches ``record``."""
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(_CHUNK):
            h.update(block)
            size += len(block)
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())
    if size != record.size or h.hexdigest() != record.sha256:
        raise ChecksumError(
            f"{src} ({size} bytes, sha256 {h.hexdigest()[:12]}...) does not match its manifest entry "
            f"({record.size} bytes, {record.sha256[:12]}...): the bundle is corrupt, collect it again",
            path=str(src),
        )


def _sweep_stale(tmp_root: Path) -> None:
    """Remove copies left in ``.tmp`` by pushes killed more than ``STALE_TMP_S`` ago."""
    current = _dt.datetime.now().timestamp()
    for p in tmp_root.glob("push-*"):
        try:
            stale = current - p.stat().st_mtime > STALE_TMP_S
        except FileNotFoundError:  # another push removed it meanwhile
            continue
        if stale:
            log.info("removing %s, left by a push that did not finish", p)
            shutil.rmtree(p, ignore_errors=True)


def _stage(src: Path, manifest_bytes: bytes, manifest: Manifest, root: Path) -> Path:
    """Copy a bundle into ``root/.tmp`` and check it against every rule of the format; the copy is read-only."""
    tmp_root = root / ".tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    _sweep_stale(tmp_root)
    staged = Path(tempfile.mkdtemp(prefix="push-", dir=tmp_root))
    try:
        for f in manifest.files:
            if not (src / f.name).is_file():
                raise CorruptBundleError(f"{src / f.name} is missing; the bundle is incomplete, collect it again", path=str(src))
            _copy_file(src / f.name, staged / f.name, f)
        (staged / MANIFEST_NAME).write_bytes(manifest_bytes)
        verify_files(staged, manifest)  # every rule of the format, on the very bytes stored
        publish_modes(staged)  # mkdtemp made it private; a registry may be shared by a team
        for p in staged.iterdir():
            p.chmod(p.stat().st_mode & ~0o222)  # stored revisions are read-only
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _intact(target: Path, manifest: Manifest, manifest_bytes: bytes) -> bool:
    """True when a stored revision exists with exactly these manifest bytes and every file still matches (a damaged copy is re-stored)."""
    if not target.is_dir():
        return False
    try:
        if (target / MANIFEST_NAME).read_bytes() != manifest_bytes:
            return False
        verify_files(target, manifest)
    except (BundleError, OSError):
        return False
    return True


def _discard(target: Path, base: Path) -> None:
    """Move a damaged revision out of the way (into .tmp) and remove it; read-only files are made writable first."""
    trash = Path(tempfile.mkdtemp(prefix="damaged-", dir=base / ".tmp"))
    os.replace(target, trash / "revision")
    for p in trash.rglob("*"):
        p.chmod(0o700 if p.is_dir() else 0o600)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _locked(repo: Path, name: str) -> Iterator[None]:
    repo.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(repo / ".lock"), timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            yield
    except Timeout:
        raise RegistryError(
            f"{name} has been locked by another push for {LOCK_TIMEOUT_S:.0f} s ({repo / '.lock'}); retry when it is done"
        ) from None


def _read_ref(repo: Path, ref: str, kind: str = "refs") -> str | None:
    p = repo / kind / ref
    if not p.is_file():
        return None
    try:
        rid = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        rid = ""
    if not _ID_RE.match(rid):
        again = f"--tag {ref}" if kind == "tags" else f"--revision {ref}"
        raise RegistryError(f"{kind[:-1]} file {p} does not hold a revision id; the local registry is damaged: push the bundle again with {again}")
    return rid


def push(
    bundle_dir: str | Path,
    name: str,
    *,
    revision: str | None = None,
    tag: str | None = None,
    message: str | None = None,
    root: str | Path | None = None,
) -> PushResult:
    """Store the bundle at ``bundle_dir`` as an immutable revision and point ref ``revision`` (default main) at it.

    ``tag`` also names the revision in ``tags/``, for good: a tag that names another revision is refused.

    Args:
        bundle_dir: a bundle directory (``sowmeta.json`` + its files).
        name: ``ORG/NAME``.
        revision: the ref to move, e.g. ``main`` or ``v1``.
        message: recorded in the bundle's ``log.jsonl``.
        root: the registry directory; default ``sowmeta.env.registry_dir()``.

    Raises:
        BundleNotFoundError, SchemaError, ChecksumError, CorruptBundleError: the bundle is not publishable.
        ConfigError: a bad name or ref. RegistryError: the lock could not be taken.
    """
    check_name(name)
    ref = check_ref(DEFAULT_REF if revision is None else revision)
    if tag is not None:
        check_ref(tag)
    src, base = Path(bundle_dir), _root(root)
    manifest = Bundle.read_manifest(src)
    check_contained(src, manifest)
    manifest_bytes = (src / MANIFEST_NAME).read_bytes()
    rid = revision_id(manifest_bytes, manifest.files)
    repo = _repo_dir(base, name)
    target = repo / "revisions" / rid
    staged = None if _intact(target, manifest, manifest_bytes) else _stage(src, manifest_bytes, manifest, base)
    try:
        with _locked(repo, name):
            if tag is not None:
                _check_tag(repo, name, tag, rid)  # before anything is stored: a refused push leaves no revision behind
            if not _intact(target, manifest, manifest_bytes):
                if staged is None:  # removed or damaged meanwhile: copy again, still under the lock
                    staged = _stage(src, manifest_bytes, manifest, base)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    log.warning("stored revision %s of %s was damaged; replacing it with the pushed copy", rid[:12], name)
                    _discard(target, base)
                os.replace(staged, target)
                staged = None
            if tag is not None and _read_ref_safe(repo, tag, "tags") is None:
                if (repo / "tags" / tag).exists():
                    log.warning("tag %s of %s was damaged (it held no revision id); it now names the pushed revision %s", tag, name, rid[:12])
                with atomic_file(repo / "tags" / tag) as tmp:
                    tmp.write_text(rid + "\n", encoding="utf-8")
            previous = _read_ref_safe(repo, ref)
            with atomic_file(repo / "refs" / ref) as tmp:
                tmp.write_text(rid + "\n", encoding="utf-8")
            entry = {"time": now(), "ref": ref, "revision": rid, "previous": previous, "message": message}
            with open(repo / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    log.info("pushed %s@%s -> %s (local registry %s)", name, ref, rid[:12], base)
    return PushResult(name=name, revision=tag or ref, commit=rid, backend="local", path=target)


def _check_tag(repo: Path, name: str, tag: str, rid: str) -> None:
    """Refuse a tag that already names another revision (tags never move)."""
    tagged = _read_ref_safe(repo, tag, "tags")
    if tagged is not None and tagged != rid:
        raise RegistryError(f"{name} already has a tag {tag!r} (revision {tagged[:12]}...); tags never move: choose another tag (nothing was pushed)")


def _resolve(repo: Path, name: str, rev: str, base: Path) -> str:
    """A ref name first, else a revision id or a unique prefix of one (7+ hex digits)."""
    check_ref(rev)
    rid = _read_ref(repo, rev) or _read_ref(repo, rev, "tags")
    if rid is not None:
        if not (repo / "revisions" / rid).is_dir():
            raise RegistryError(f"{name}@{rev} points to revision {rid[:12]}..., which is missing from {base}; push it again")
        return rid
    if _HEX_RE.match(rev):
        hits = sorted(d.name for d in (repo / "revisions").glob(f"{rev}*") if d.is_dir())
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ConfigError(f"revision {rev!r} of {name} is ambiguous ({len(hits)} revisions start with it); give more digits")
    refs = sorted(p.name for p in (repo / "refs").glob("[!.]*")) if (repo / "refs").is_dir() else []
    raise RevisionNotFoundError(
        f"{name} has no revision {rev!r} in the local registry {base} (refs: {', '.join(refs) or 'none'}); "
        "pass one of them or a revision id"
    )


def _read_ref_safe(repo: Path, rev: str, kind: str = "refs") -> str | None:
    try:
        return _read_ref(repo, rev, kind)
    except RegistryError:
        return None


def pull(
    name: str,
    *,
    revision: str | None = None,
    to: str | Path | None = None,
    root: str | Path | None = None,
) -> PullResult:
    """Find ``name@revision`` (a ref or a revision id, default main), verify it, and return its directory.

    Without ``to`` the path is inside the registry (read-only files); with ``to`` a copy is written there.

    Raises:
        NotFoundError, RevisionNotFoundError, ChecksumError, CorruptBundleError, OutputExistsError.
    """
    check_name(name)
    base = _root(root)
    repo = _repo_dir(base, name)
    if not (repo / "revisions").is_dir():
        cached = _from_hub_cache(name, revision)
        if cached is None:
            raise NotFoundError(_not_found(name, base))
        return cached if to is None else replace(cached, path=export_bundle(cached.path, Bundle.read_manifest(cached.path), to))
    rev = DEFAULT_REF if revision is None else check_ref(revision)
    rid = _resolve(repo, name, rev, base)
    path = repo / "revisions" / rid
    try:
        manifest = Bundle.read_manifest(path)
        verify_files(path, manifest)
    except (SchemaError, ChecksumError, CorruptBundleError, BundleNotFoundError) as exc:
        raise type(exc)(f"{exc.detail}; the local registry's copy of {name}@{rev} is damaged: push the bundle again to repair it",
                        path=exc.path, rule=exc.rule) from None
    if to is not None:
        path = export_bundle(path, manifest, to)
    log.info("pulled %s@%s (%s) from the local registry -> %s", name, rev, rid[:12], path)
    return PullResult(name=name, revision=rev, commit=rid, path=path, backend="local", manifest=manifest)


def _from_hub_cache(name: str, revision: str | None) -> PullResult | None:
    """A bundle pulled from the Hub earlier, found in the cache without the network (what ``list`` shows, ``pull`` finds)."""
    for e in list_cached():
        if e.name == name and ((revision or DEFAULT_REF) in e.refs or (revision is not None and (e.commit or "").startswith(revision))):
            manifest = Bundle.read_manifest(e.path)
            verify_files(e.path, manifest)
            log.info("%s@%s found in the Hub cache (commit %s)", name, revision or DEFAULT_REF, e.commit)
            return PullResult(name=name, revision=revision or DEFAULT_REF, commit=e.commit or "", path=e.path, backend="hub-cache")
    return None


def _not_found(name: str, base: Path) -> str:
    """Why ``name`` is not found: a mistyped directory (its first part is a local folder), or a name nothing holds."""
    head = Path(name.split("/")[0])
    if head.is_dir():
        return (f"{name} is not a bundle directory ({head}/ has no such folder) and no bundle of that name is in the local "
                f"registry {base}; check the path")
    return (f"{name} is neither in the local registry {base} nor pulled from the Hub; push a bundle under that name first, "
            "or pull it from the Hub (registry='hub')")


def list_bundles(*, root: str | Path | None = None) -> list[BundleEntry]:
    """Every revision the local registry holds, with the refs pointing at it (newest first per name)."""
    base = _root(root)
    entries: list[BundleEntry] = []
    if not base.is_dir():
        return entries
    for revs in sorted([*base.glob("*/*/revisions"), *base.glob(f"*/*/{_SUB}/**/revisions")]):
        repo = revs.parent
        if repo.relative_to(base).parts[0].startswith("."):
            continue
        name = _name_of(base, repo)
        refs: dict[str, list[str]] = {}
        for kind in ("refs", "tags"):
            for ref in sorted((repo / kind).glob("[!.]*")) if (repo / kind).is_dir() else []:
                rid = _read_ref_safe(repo, ref.name, kind)
                if rid is not None:
                    refs.setdefault(rid, []).append(ref.name)
        found = []
        for d in revs.iterdir():
            if d.is_dir() and _ID_RE.match(d.name):
                mtime = _dt.datetime.fromtimestamp(d.stat().st_mtime, _dt.timezone.utc).replace(microsecond=0)
                found.append((mtime, d))
        for mtime, d in sorted(found, key=lambda x: x[0], reverse=True):
            own = sorted(refs.get(d.name, []), key=lambda r: (r != DEFAULT_REF, r))
            entries.append(
                BundleEntry(name=name, commit=d.name, backend="local", refs=tuple(own), path=d,
                            updated=mtime.isoformat().replace("+00:00", "Z"))
            )
    return entries


def resolve(name: str, revision: str | None = None, *, root: str | Path | None = None) -> str:
    """The revision id ``name@revision`` (default main) points at."""
    check_name(name)
    base = _root(root)
    repo = _repo_dir(base, name)
    if not (repo / "revisions").is_dir():
        raise NotFoundError(f"{name} is not in the local registry {base}; push it with `sowmeta push DIR {name}`")
    return _resolve(repo, name, DEFAULT_REF if revision is None else revision, base)


class LocalRegistry:
    """The local registry at ``root`` as a ``Backend``; what it lists includes the Hub downloads in the cache."""

    kind = "local"

    def __init__(self, root: str | Path, *, why: str = "default") -> None:
        self.root = Path(root)
        self.why = why

    def push(self, bundle_dir: str | Path, name: str, *, revision: str | None = None, message: str | None = None,
             tag: str | None = None, **options: object) -> PushResult:
        hub_only = sorted(k for k, v in options.items() if v not in (None, False) and k != "license")
        if hub_only:
            raise ConfigError(f"{hub_only[0]}= applies to the Hub, but the local registry was chosen ({self.why}); pass registry='hub'")
        return push(bundle_dir, name, revision=revision, tag=tag, message=message, root=self.root)

    def pull(self, name: str, *, revision: str | None = None, to: str | Path | None = None, token: str | None = None) -> PullResult:
        return pull(name, revision=revision, to=to, root=self.root)

    def list(self, *, author: str | None = None) -> list[BundleEntry]:
        entries = [*list_bundles(root=self.root), *list_cached()]
        return [e for e in entries if author is None or e.name.split("/")[0] == author]

    def resolve(self, name: str, revision: str | None = None) -> str:
        return resolve(name, revision, root=self.root)

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.root)!r}, why={self.why!r})"
