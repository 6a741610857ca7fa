"""Each field of an options record (``SynthConfig``, ``DistillConfig``, ``CollectOptions``) described once.

A field's ``metadata["option"]`` is an ``Option``: its help, and what a command line needs that its
type does not say (a range, the choices, another spelling, how repeated values combine).
``sowmeta.cli.options.record_options`` makes the click options from it, with each preset's default
in the help, and ``documented`` writes the record's "Attributes:" docstring section from it, so a
field's name, type, help and defaults have one source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["Option", "option", "options_of", "documented"]

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Option:
    """How one field is offered: ``help`` (a sentence or two), and for the command line:

    ``flag`` its spelling when not ``--field-name`` (``off`` a flag's negative, default ``--no-NAME``);
    ``low``/``high`` the accepted range (``high_open``: ``high`` itself excluded); ``choices`` the
    accepted names, or a function giving them (a registry's, read when needed); ``parse`` turns the
    repeated values of a ``multiple`` option into the field's value; ``by_hand``: the command defines
    the option itself, because its value needs translating (a folder for ``init``, a device to check).
    """

    help: str
    flag: str | None = None
    off: str | None = None
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    multiple: bool = False
    parse: Callable[[Any], Any] | None = None
    metavar: str | None = None
    by_hand: bool = False

    def cli_flag(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")


def option(help: str, **spec: Any) -> dict[str, Option]:
    """``field(metadata=option(...))``: the field's ``Option``."""
    return {"option": Option(help, **spec)}


def options_of(record: type) -> list[tuple[dataclasses.Field, Option]]:
    """Every field of the dataclass ``record`` with its ``Option`` (a field without one is a bug: every field is an option)."""
    out = []
    for f in dataclasses.fields(record):
        spec = f.metadata.get("option")
        if not isinstance(spec, Option):
            raise ConfigError(f"{record.__name__}.{f.name} has no Option; describe it with field(metadata=option(...))")
        out.append((f, spec))
    return out


def documented(record: T) -> T:
    """Class decorator: append an "Attributes:" section built from the fields' help to the docstring."""
    lines = [f"        {f.name}: {spec.help}" for f, spec in options_of(record)]
    record.__doc__ = (record.__doc__ or "").rstrip() + "\n\n    Attributes:\n" + "\n".join(lines) + "\n    "
    return record
