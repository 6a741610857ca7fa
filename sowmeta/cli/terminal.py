"""The terminal: the CLI's two consoles, its notes, and every failure a user can cause as one line (``ERROR_TABLE``).

sowmeta's own errors exit 1, option and usage errors 2 (``main.SowmetaGroup``); a file error a
library path missed is one line too. ``SOWMETA_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console, ConsoleDimensions

from sowmeta import errors as E
from sowmeta.cli.safe_text import shown
from sowmeta.env import debug_enabled

__all__ = ["console", "err_console", "quiet_hub_bars", "ERROR_TABLE", "note_printer", "error_line", "fail", "handle_errors"]

# Off a terminal (a pipe, a log) nothing is cut to 80 columns: tables keep every identifier a user copies
# (tap names, dates, URLs, cache paths) whole. soft_wrap: a message is one line, so logs can be grepped.
UNBOUNDED_WIDTH = 100_000


class _Console(Console):
    """A rich console whose width is the terminal's, or unbounded when its output is not a terminal."""

    @property
    def size(self) -> ConsoleDimensions:  # type: ignore[override]
        size = super().size
        return size if self.is_terminal or self._width is not None else ConsoleDimensions(UNBOUNDED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = _Console(soft_wrap=True)
err_console = _Console(stderr=True, soft_wrap=True)

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


def note_printer(quiet: bool, keep: list[str] | None = None) -> Callable[[str], None]:
    """The ``notice`` callback of library calls: prints each one-line note to stderr unless ``quiet``, and appends it to
    ``keep`` (for a ``--json`` result) when given."""

    def notice(line: str) -> None:
        if keep is not None:
            keep.append(line)
        if not quiet:  # a library note speaks the API (weights=FILE); on the command line, its options
            err_console.print(f"[yellow]note[/]: {shown(as_cli_text(line, _command_flags()))}", soft_wrap=True)

    return notice


def quiet_hub_bars() -> None:
    """Silence huggingface_hub's own download bars (``-q`` and ``--json`` show nothing but the result)."""
    import os

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub is first imported
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


_KEYWORD = re.compile(r"\b([a-z][a-z0-9_]*)=(True\b|'([^']*)'|\"([^\"]*)\"|(?=[A-Z0-9])|(?=[\s,;)]|$))")


def as_cli_text(text: str, flags: dict[str, str]) -> str:
    """An API message in the command line's words: a keyword the command has as an option (``with_weights=FILE``,
    ``registry='hub'``, ``update_model_card=True``) becomes that option (``--with-weights FILE``, ...)."""

    def flag(m: re.Match[str]) -> str:
        opt = flags.get(m.group(1))
        if opt is None:
            return m.group(0)
        value = m.group(3) if m.group(3) is not None else m.group(4)
        if value is not None:
            return f"{opt} {value}"
        follows = m.string[m.end():m.end() + 1]
        return f"{opt} " if m.group(2) == "" and follows[:1].isalnum() else opt

    return _KEYWORD.sub(flag, text)


def _command_flags() -> dict[str, str]:
    """Parameter name -> its long option, for the command running now (empty outside a command)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {}
    return {p.name: max(p.opts, key=len) for p in ctx.command.params if isinstance(p, click.Option) and p.name and not p.hidden}


def error_line(exc: BaseException) -> str:
    """The one line the CLI prints for a ``SowmetaError``, its API keywords named as the command's options."""
    text = as_cli_text(str(exc), _command_flags())
    for typ, prefix in ERROR_TABLE:
        if isinstance(exc, typ):
            return f"{prefix}: {text}"
    return text


def fail(line: str, code: int) -> None:
    err_console.print(f"[bold red]error[/]: {shown(line)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


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
        except BrokenPipeError:  # `sowmeta models | head`: the reader has what it wanted
            _silence_stdout()
            sys.exit(0)
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
