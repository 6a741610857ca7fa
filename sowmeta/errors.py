"""The one exception tree of sowmeta: every failure a user can cause is a ``SowmetaError``.

Messages say what was wrong, where, and how to fix it, in one line. Where a built-in
exception means the same thing, the class inherits from it too, so ``except
FileNotFoundError`` keeps working.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "SowmetaError",
    "ConfigError",
    "ModelError",
    "WeightsError",
    "TapError",
    "DataError",
    "CorruptImageError",
    "SeedRejectedError",
    "BundleError",
    "BundleNotFoundError",
    "SchemaError",
    "ChecksumError",
    "CorruptBundleError",
    "ModelMismatchError",
    "UnsupportedVersionError",
    "OutputExistsError",
    "StorageError",
    "storage_errors",
    "RegistryError",
    "NotFoundError",
    "RevisionNotFoundError",
    "AuthError",
    "GatedRepoError",
    "NetworkError",
    "OfflineError",
    "SynthesisError",
    "DivergenceError",
]


def first_line(text: str | None) -> str:
    """The first non-blank line of a message, without its final period ("" for none).

    Library errors (torch, huggingface_hub) often run over several lines; a sowmeta message
    quotes only this one, so that it stays one line.
    """
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[0].rstrip(".") if lines else ""


# torch re-raises an exception from a DataLoader worker as the same type, made from this text
_WORKER_WRAP = re.compile(r"\ACaught \w+ (in .+?)\.\nOriginal (Traceback .*)\Z", re.DOTALL)


def _unwrap_worker(cls: type, message: str) -> tuple[str, str | None]:
    """The original one-line message of an error torch re-raised from a worker, and the worker's traceback.

    Messages that did not come through a worker come back unchanged, with no traceback.
    """
    wrapped = _WORKER_WRAP.match(message)
    if wrapped is None:
        return message, None
    where, trace = wrapped.groups()
    head = f"{cls.__module__}.{cls.__qualname__}: "
    at = trace.rfind("\n" + head)
    if at < 0:
        return message, None
    return trace[at + 1 + len(head):].strip(), f"raised {where}:\n{trace.rstrip()}"


class SowmetaError(Exception):
    """Base of every error sowmeta raises on purpose."""

    def __init__(self, *args: object) -> None:
        worker_trace = None
        if len(args) == 1 and isinstance(args[0], str):
            message, worker_trace = _unwrap_worker(type(self), args[0])
            args = (message,)
        super().__init__(*args)
        if worker_trace is not None and hasattr(self, "add_note"):  # the worker's traceback, for SOWMETA_DEBUG=1
            self.add_note(worker_trace)


class ConfigError(SowmetaError, ValueError):
    """An option or argument has a value sowmeta cannot use."""


class ModelError(SowmetaError, ValueError):
    """A model name, factory or architecture cannot be resolved or built."""


class WeightsError(ModelError):
    """A weights file is missing, unreadable, unsafe, or does not fit the architecture."""


class TapError(SowmetaError, ValueError):
    """A tap specification names no module, or a module whose output has no channel axis."""


class DataError(SowmetaError, ValueError):
    """A dataset is missing, malformed, or does not fit the model."""


class CorruptImageError(DataError):
    """An image file could not be decoded (raised only in strict mode; otherwise counted)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SeedRejectedError(DataError):
    """Every seed of a class was rejected by the inference check."""


class BundleError(SowmetaError):
    """A bundle is missing, malformed, or does not belong to the given model.

    ``rule`` names the rule of docs/format.md ("Rules") the bundle breaks, when one does; the
    message then ends with ``[rule NAME]``, so that every reader can be compared on it.
    """

    def __init__(self, message: str, *, path: str | None = None, rule: str | None = None) -> None:
        super().__init__(f"{message} [rule {rule}]" if rule else message)
        self.detail = message  # the message without the rule
        self.path = path
        self.rule = rule


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle (no ``sowmeta.json``) at the given path."""


class SchemaError(BundleError):
    """The manifest does not satisfy ``bundle-v1.schema.json``."""


class ChecksumError(BundleError):
    """A bundle file's sha256 differs from the one its manifest records."""


class CorruptBundleError(BundleError):
    """A bundle file is truncated or not valid safetensors, or its tensors are inconsistent."""


class ModelMismatchError(BundleError):
    """The bundle was recorded on a different model (taps, channels, classes or weights)."""

    def __init__(self, message: str, *, tap: str | None = None, path: str | None = None, rule: str | None = None) -> None:
        super().__init__(message, path=path, rule=rule)
        self.tap = tap


class UnsupportedVersionError(BundleError):
    """The bundle's format major version is newer than this sowmeta can read."""

    def __init__(self, message: str, *, version: str | None = None, path: str | None = None) -> None:
        super().__init__(message, path=path, rule="format-version")
        self.version = version


class OutputExistsError(SowmetaError, FileExistsError):
    """The output path exists and overwriting was not asked for."""


class StorageError(SowmetaError, OSError):
    """A file or directory could not be read or written (permissions, a full disk, a file where a folder should be)."""


@contextmanager
def storage_errors(what: str, path: object) -> Iterator[None]:
    """Turn an ``OSError`` inside the block into a one-line ``StorageError`` about ``what`` at ``path``."""
    try:
        yield
    except SowmetaError:
        raise
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            fix = "free some space (or raise the file size limit), or choose another place"
        else:
            fix = "check the path and its permissions, or choose another place"
        raise StorageError(f"cannot {what} {path}: {reason}; {fix}") from exc


class RegistryError(SowmetaError):
    """Publishing or fetching a bundle failed."""


class NotFoundError(RegistryError, FileNotFoundError):
    """The named bundle repository does not exist (or is not visible with these credentials)."""


class RevisionNotFoundError(NotFoundError):
    """The repository exists but the revision (branch, tag or commit) does not."""


class AuthError(RegistryError, PermissionError):
    """The registry refused the credentials (missing or invalid token)."""


class GatedRepoError(AuthError):
    """The repository is gated: access must be requested on the Hub first."""


class NetworkError(RegistryError, ConnectionError):
    """The registry could not be reached."""


class OfflineError(RegistryError):
    """Offline mode is on and the bundle is not in the local cache."""


class SynthesisError(SowmetaError):
    """Synthesis cannot start or continue."""


class DivergenceError(SynthesisError, FloatingPointError):
    """The synthesis loss became NaN or infinite."""

    def __init__(self, message: str, *, iteration: int | None = None) -> None:
        super().__init__(message)
        self.iteration = iteration
