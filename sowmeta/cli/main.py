"""The ``sowmeta`` click application: parse options, call the library, render with rich.

Every failure a user can cause prints one line on stderr and exits non-zero: sowmeta's own
errors (exit 1), option and usage errors (exit 2), and a file error a library path missed.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from sowmeta import errors as E
from sowmeta.cli.safe_text import shown
from sowmeta.env import debug_enabled
from sowmeta.version import __version__

__all__ = ["main", "console", "err_console", "handle_errors", "error_line"]

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


def _fail(line: str, code: int) -> None:
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
            _fail(error_line(exc), 1)
        except OSError as exc:  # a library path that missed its conversion: still one line
            if debug_enabled():
                raise
            where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            _fail(f"file error:{where}: {exc.strerror or exc}", 1)
        except KeyboardInterrupt:
            err_console.print(
                "[bold red]interrupted[/]: no output was left half-written; "
                "synthesize and distill continue after their last finished batch or epoch when run again"
            )
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class SowmetaGroup(click.Group):
    """A click group whose usage errors (unknown option, missing value) are one line too, exit code 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f"sowmeta {exc.ctx.info_name} --help" if exc.ctx is not None and exc.ctx.parent is not None else "sowmeta --help"
            _fail(f"{exc.format_message()} (see `{where}`)", 2)
        except click.Abort:
            err_console.print("[bold red]aborted[/]")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _load_plugins(names: tuple[str, ...]) -> None:
    """Import the modules named with ``--plugin`` and those installed under the ``sowmeta.plugins`` entry-point group.

    A plugin registers models, model sources, tap presets, feature losses or registry backends
    on import, so they are usable from every command.
    """
    import importlib
    from importlib.metadata import entry_points

    for ep in entry_points(group="sowmeta.plugins"):
        ep.load()
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise E.ConfigError(f"--plugin {name!r} cannot be imported ({exc}); check PYTHONPATH") from exc


@click.group(cls=SowmetaGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sowmeta")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE first: it may register models, taps presets, feature losses or registry backends. Repeatable.")
@handle_errors
def main(verbose: int, plugins: tuple[str, ...]) -> None:
    """sowmeta: release class-conditional statistics with a classifier and synthesize images from it."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # huggingface_hub logs each retry of a failed download on its own handler; sowmeta reports the failure in one line
    # (-v shows them). It reads HF_HUB_VERBOSITY when first imported, which happens later, inside a command.
    os.environ.setdefault("HF_HUB_VERBOSITY", "error" if verbose == 0 else "warning")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR if verbose == 0 else level)
    _load_plugins(plugins)


def _register() -> None:
    import importlib

    for name in ("collect_cmds", "registry_cmds", "synth_cmds", "evaluate_cmds", "demo_cmds"):
        importlib.import_module(f"sowmeta.cli.{name}").register(main)


_register()


if __name__ == "__main__":
    main()
