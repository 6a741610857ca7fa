"""The terminal: the CLI's two consoles, its notes, and every failure a user can cause as one line (``ERROR_TABLE``).

sowmeta's own errors exit 1, option and usage errors 2 (``main.SowmetaGroup``); a file error a
library path missed is one line too. ``SOWMETA_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console

from sowmeta import errors as E
from sowmeta.cli.safe_text import shown
from sowmeta.env import debug_enabled

__all__ = ["console", "err_console", "ERROR_TABLE", "note_printer", "error_line", "fail", "handle_errors"]

# soft_wrap: a message is one line however narrow the terminal (or 80 columns when piped), so logs can be grepped
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

# Exception type -> message prefix, most specific first (the first isinstance match wins).
ERROR_TABLE: list[tuple[type[BaseException], str]] = [
    (E.UnsupportedVersionError, "unsupported bundle version"),
    (E.ChecksumError, "checksum mismatch"),
    (E.CorruptBundleError, "corrupt bundle"),
    (E.SchemaError, "invalid manifest"),
    (E.ModelMismatchError, "bundle does not match the model"),
    (E.BundleNotFoundError, "bundle not found"),
    (E.BundleError, "bundle error"),
    (E.OutputExistsError, "output exists"),
    (E.StorageError, "file error"),
    (E.RevisionNotFoundError, "revision not found"),
    (E.NotFoundError, "not found"),
    (E.GatedRepoError, "gated repository"),
    (E.AuthError, "authentication failed"),
    (E.OfflineError, "offline"),
    (E.NetworkError, "network error"),
    (E.RegistryError, "registry error"),
    (E.CorruptImageError, "corrupt image"),
    (E.SeedRejectedError, "seeds rejected"),
    (E.DataError, "data error"),
    (E.WeightsError, "weights error"),
    (E.ModelError, "model error"),
    (E.TapError, "tap error"),
    (E.DivergenceError, "diverged"),
    (E.SynthesisError, "synthesis error"),
    (E.ConfigError, "invalid option"),
    (E.SowmetaError, "error"),
]


def note_printer(quiet: bool) -> Callable[[str], None]:
    """The ``notice`` callback of library calls: prints each one-line note to stderr unless ``quiet``."""

    def notice(line: str) -> None:
        if not quiet:
            err_console.print(f"[yellow]note[/]: {shown(line)}", soft_wrap=True)

    return notice


def error_line(exc: BaseException) -> str:
    """The one line the CLI prints for a ``SowmetaError``."""
    for typ, prefix in ERROR_TABLE:
        if isinstance(exc, typ):
            return f"{prefix}: {exc}"
    return str(exc)


def fail(line: str, code: int) -> None:
    err_console.print(f"[bold red]error[/]: {shown(line)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn any ``SowmetaError`` into one line on stderr and exit code 1 (traceback with SOWMETA_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except E.SowmetaError as exc:
            if debug_enabled():
                raise
            fail(error_line(exc), 1)
        except OSError as exc:  # a library path that missed its conversion: still one line
            if debug_enabled():
                raise
            where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            fail(f"file error:{where}: {exc.strerror or exc}", 1)
        except KeyboardInterrupt:
            err_console.print(
                "[bold red]interrupted[/]: no output was left half-written; "
                "synthesize and distill continue after their last finished batch or epoch when run again"
            )
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
