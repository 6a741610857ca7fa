"""Write files and directories so that readers see the old version or the new one, never half."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputExistsError, storage_errors
from .outputs import OutputKind, require_replaceable

__all__ = ["atomic_dir", "atomic_file", "sha256_file", "publish_modes"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = _read_umask()


def publish_modes(root: Path) -> None:
    """Give ``root`` and everything in it the usual modes (temp files are created private)."""
    mask = _UMASK
    for p in [root, *root.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_dir(target: str | Path, *, overwrite: bool = False, kind: OutputKind = "bundle") -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target``.

    An existing ``target`` is replaced only with ``overwrite`` and only when it is sowmeta's own
    output of ``kind`` (or empty). On any exception the temporary directory is removed and
    ``target`` is untouched.
    """
    target = Path(target)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{target} already exists; choose another path or pass --overwrite")
        require_replaceable(target, kind)
    with storage_errors("write", target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        with storage_errors("write", target):
            yield tmp
            publish_modes(tmp)
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old / "x")
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(target: str | Path, *, overwrite: bool = True, kind: OutputKind | None = None) -> Iterator[Path]:
    """Yield a temporary file path beside ``target``; on success it is renamed onto ``target``.

    With ``kind``, an existing ``target`` is replaced only when it is sowmeta's own output of that kind.
    """
    target = Path(target)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{target} already exists; choose another path or pass --overwrite")
        if kind is not None:
            require_replaceable(target, kind)
    with storage_errors("write", target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        os.close(fd)
    tmp = Path(name)
    try:
        with storage_errors("write", target):
            yield tmp
            publish_modes(tmp)
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
