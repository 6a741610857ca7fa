"""Options every command spells the same way: ``--model/--weights``, ``--registry``, ``--device``, ``--json``, ``-q``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["model_options", "registry_option", "device_option", "report_options", "emit_json", "plain", "ListingOption"]

F = TypeVar("F", bound=Callable[..., Any])

WEIGHTS_HELP = "Weights: DEFAULT (the source's pretrained ones), a torchvision weights name, a file, hf://ORG/NAME[@REV]/FILE, or none."


def model_options(*, required: bool = False, multiple: bool = False, what: str = "the model") -> Callable[[F], F]:
    """``--model NAME``, ``--weights W`` and ``--model-arg KEY=VALUE`` (``--model``/``--weights`` repeatable in pairs with ``multiple``)."""

    def deco(fn: F) -> F:
        model_help = f"Model of {what}: a built-in or torchvision name (resnet50, cifar-resnet56), or package.module:factory."
        if multiple:
            model_help += " Repeatable; pair each with a --weights in the same order."
        if not multiple:
            fn = click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
                              help="A keyword argument for the model's constructor (package.module:factory, timm); repeatable.")(fn)
        fn = click.option("--weights", "weights", multiple=multiple, default=() if multiple else None, help=WEIGHTS_HELP)(fn)
        return click.option("--model", "model", multiple=multiple, required=required, help=model_help)(fn)

    return deco


def registry_option(fn: F) -> F:
    return click.option(
        "--registry", default=None,
        help="Where bundle names resolve: hub, local, or a local registry directory (default: $SOWMETA_REGISTRY, else the local registry).",
    )(fn)


def _checked_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from sowmeta.devices import check_device
    from sowmeta.errors import ConfigError

    try:
        check_device(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def device_option(fn: F) -> F:
    return click.option("--device", default="cpu", show_default=True, callback=_checked_device,
                        help="Where to run: cpu, cuda, cuda:1, ...")(fn)


def report_options(fn: F) -> F:
    """``--json`` (one JSON object on stdout, nothing else) and ``-q`` (no progress display, no tables)."""
    fn = click.option("-q", "--quiet", is_flag=True, help="No progress display; only the final line (or nothing with --json).")(fn)
    return click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout and nothing else.")(fn)


def plain(value: Any) -> Any:
    """Dataclasses, paths and tuples as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def emit_json(value: Any) -> None:
    """Write ``value`` as one JSON object to stdout."""
    click.echo(json.dumps(plain(value), indent=2))


class ListingOption(click.Option):
    """An option whose help ends with the names a registry holds when the help is shown (plugins included)."""

    def __init__(self, *args: Any, names: Callable[[], list[str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.names = names
        self.base_help = self.help or ""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = f"{self.base_help} Registered: {', '.join(self.names())}."
        return super().get_help_record(ctx)
