"""Compiling a C source into a shared library in the cache, and loading only a library this user can vouch for.

Loading a shared library runs its code (its constructors run on load), so a file at the cache
path is loaded only when it is owned by this user, writable by nobody else, and has the sha256
recorded beside it when this user built it; the bytes checked are the bytes loaded (the open
file is loaded through ``/proc/self/fd``). A cache folder that is not this user's or that others
may write to is not used at all: the library is then built into a private temporary folder for
this process. Anything else found at the path is built over.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import stat
import subprocess
import tempfile
from pathlib import Path

__all__ = ["UntrustedLibrary", "library_path", "load_library"]

log = logging.getLogger(__name__)


class UntrustedLibrary(OSError):
    """A file at the library's path that this process may not load; it is built again."""


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor()
    keep = [line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(dict.fromkeys(keep))


def library_path(folder: Path, source: Path, compiler: str, flags: list[str], runtime: Path) -> Path:
    """Where the library for this source, compiler, flags, runtime and CPU lives in ``folder``."""
    version = subprocess.run([compiler, "--version"], check=False, capture_output=True, text=True, timeout=30).stdout
    parts = (source.read_bytes(), compiler.encode(), version.encode(), " ".join(flags).encode(), str(runtime).encode(), _cpu_signature().encode())
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return folder / f"{source.stem}-{key}.so"


def _private(st: os.stat_result) -> bool:
    """Owned by this user and writable by no one else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _record(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _build(target: Path, source: Path, compiler: str, flags: list[str], runtime: Path) -> None:
    """Compile into a temporary file beside ``target``, record its sha256, then rename it into place."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        out = Path(tmp) / target.name
        cmd = [compiler, *flags, str(source), "-o", str(out), str(runtime), f"-Wl,-rpath,{runtime.parent}"]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise OSError(f"{Path(compiler).name} exited with {done.returncode}: {(done.stderr.strip().splitlines() or [''])[0]}")
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        record = Path(tmp) / _record(target).name
        record.write_text(digest + "\n", encoding="ascii")
        os.replace(record, _record(target))
        os.replace(out, target)
    log.info("built %s", target)


def _read_private(path: Path) -> bytes:
    """The bytes of a regular file this user owns and no one else may write (``UntrustedLibrary`` otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _private(st):
            raise UntrustedLibrary(f"{path} is not a file of this user's that only they may write")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def _open(target: Path) -> ctypes.CDLL:
    """Load ``target`` if it is private and has the recorded sha256; the very bytes checked are loaded."""
    want = _read_private(_record(target)).decode("ascii", "replace").strip()
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _private(st):
            raise UntrustedLibrary(f"{target} is not a file of this user's that only they may write")
        h = hashlib.sha256()
        with os.fdopen(os.dup(fd), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != want:
            raise UntrustedLibrary(f"{target} is not the library that was built there (its sha256 differs from the record)")
        return ctypes.CDLL(f"/proc/self/fd/{fd}")  # the open file: the bytes just hashed, whatever the path names now
    finally:
        os.close(fd)


def load_library(folder: Path, source: Path, compiler: str, flags: list[str], runtime: Path) -> ctypes.CDLL:
    """The compiled ``source``: from ``folder`` when a trusted build is there, else built (into it, or privately) and loaded.

    Raises:
        OSError: the compiler failed, or the library does not load.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _private(folder.stat()):
        log.warning("%s is not only yours to write: the kernel is built for this process alone instead of loading anything there", folder)
        folder = Path(tempfile.mkdtemp(prefix="sowmeta-native-"))
    target = library_path(folder, source, compiler, flags, runtime)
    if target.exists() or target.is_symlink():
        try:
            return _open(target)
        except OSError as exc:  # not ours, changed, or damaged (a full disk, a copy cut short): build it afresh, once
            log.info("%s is not loaded (%s); building it again", target, exc)
            target.unlink(missing_ok=True)
    _build(target, source, compiler, flags, runtime)
    return _open(target)
