"""The ``sowmeta`` click application: the group, its global options (-v, --plugin), and every command.

Each command lives in a module of its stage (``collect_cmds.py``, ``synth_cmds.py``, ...) and is a
thin layer over a library function: parse options, call it, render with rich. Every failure a user
can cause prints one line on stderr and exits non-zero (``terminal.py``): sowmeta's own errors
(exit 1), option and usage errors (exit 2), and a file error a library path missed.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from sowmeta import errors as E
from sowmeta.cli import collect_cmds, demo_cmds, evaluate_cmds, privacy_cmds, registry_cmds, synth_cmds
from sowmeta.cli.terminal import err_console, fail, handle_errors
from sowmeta.version import __version__

__all__ = ["main"]


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
            fail(f"{exc.format_message()} (see `{where}`)", 2)
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


for _module in (collect_cmds, registry_cmds, synth_cmds, evaluate_cmds, privacy_cmds, demo_cmds):
    for _command in _module.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":
    main()
