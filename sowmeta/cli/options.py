"""Options every command spells the same way (``--model/--weights``, ``--registry``, ``--device``, ``--json``, ``-q``), and
the options of a record's fields (``record_options``: ``SynthConfig``, ``DistillConfig``, ``CollectOptions``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = [
    "model_options",
    "registry_option",
    "device_option",
    "report_options",
    "workers_option",
    "aliased_option",
    "emit_json",
    "plain",
    "ListingOption",
    "RecordOption",
    "record_options",
    "record_values",
    "shown_default",
]

F = TypeVar("F", bound=Callable[..., Any])

WEIGHTS_HELP = "Weights: DEFAULT (the source's pretrained ones), a torchvision weights name, a file, hf://ORG/NAME[@REV]/FILE, or none."


def model_options(*, required: bool = False, multiple: bool = False, what: str = "the model", model_default: str = "required",
                  weights_default: str = "DEFAULT") -> Callable[[F], F]:
    """``--model NAME``, ``--weights W`` and ``--model-arg KEY=VALUE`` (``--model``/``--weights`` repeatable in pairs with ``multiple``);
    ``model_default`` and ``weights_default`` are what their help says applies when they are not given."""

    def deco(fn: F) -> F:
        model_help = (f"Model of {what}: a built-in or torchvision name (resnet50, cifar-resnet56), timm:NAME (timm:vit_tiny_patch16_224), "
                      "hf-hub:ORG/NAME (a timm or transformers classifier on the Hub), or package.module:factory; see `sowmeta models`.")
        if multiple:
            model_help += " Repeatable; pair each with a --weights in the same order."
        if not multiple:
            fn = click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
                              help="A keyword argument for the model's constructor (package.module:factory, timm); repeatable. [none]")(fn)
        fn = click.option("--weights", "weights", multiple=multiple, default=() if multiple else None,
                          help=f"{WEIGHTS_HELP} [{weights_default}]")(fn)
        model_help += f" [{model_default}]"
        return click.option("--model", "model", multiple=multiple, required=required, help=model_help)(fn)

    return deco


def registry_option(fn: F) -> F:
    return click.option(
        "--registry", default=None,
        help="Where bundle names resolve: hub, local, or a local registry directory. [$SOWMETA_REGISTRY, else local]",
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


def _quiet_hub(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        from sowmeta.cli.terminal import quiet_hub_bars

        quiet_hub_bars()
    return value


WORKERS_HELP = "Processes decoding images (0: in this process); unset: chosen for the cores there are, none on 2 cores."


def workers_option(fn: F) -> F:
    """``--workers``, spelled, defaulted and explained the same in collect, evaluate and distill."""
    return click.option("--workers", type=click.IntRange(0), default=None, help=f"{WORKERS_HELP} [unset]")(fn)


def aliased_option(name: str, alias: str, *, dest: str, required: bool = False, **kwargs: Any) -> Callable[[F], F]:
    """Option ``name`` also read from the hidden, older spelling ``alias`` (kept so existing scripts still run)."""

    def take_alias(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            ctx.meta[f"alias:{dest}"] = value
        return value

    def take(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        value = value if value is not None else ctx.meta.get(f"alias:{dest}")
        if value is None and required and not ctx.resilient_parsing:
            raise click.MissingParameter(ctx=ctx, param=param)
        return value

    def deco(fn: F) -> F:
        fn = click.option(alias, f"{dest}_alias", hidden=True, expose_value=False, callback=take_alias, is_eager=True,
                          type=kwargs.get("type"), help=f"The older spelling of {name}.")(fn)
        return click.option(name, dest, callback=take, **kwargs)(fn)

    return deco


def report_options(fn: F) -> F:
    """``--json`` (one JSON object on stdout, nothing else) and ``-q`` (no progress display, no tables, no download bars)."""
    fn = click.option("-q", "--quiet", is_flag=True, callback=_quiet_hub,
                      help="No progress display (huggingface_hub's download bars included); only the final line (or nothing with --json).")(fn)
    return click.option("--json", "as_json", is_flag=True, callback=_quiet_hub,
                        help="Print the result as one JSON object on stdout and nothing else.")(fn)


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


def shown_default(value: Any) -> str:
    """A default as an option's help shows it: on/off, 0.25, 1e-05, 0.5 0.9, none."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "unset"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return " ".join(shown_default(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={shown_default(v)}" for k, v in value.items()) or "none"
    return str(value)


class RecordOption(click.Option):
    """The option of one field of a record: its help ends with the default of every preset, read when the help is shown
    (with the names a registry holds, for a field whose choices come from one)."""

    def __init__(self, *args: Any, defaults: Callable[[], dict[str, Any]], listing: Callable[[], Sequence[str]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.defaults = defaults
        self.listing = listing
        self.base_help = self.help or ""

    def shown_defaults(self) -> str:
        values = {preset: shown_default(v) for preset, v in self.defaults().items()}
        if len(set(values.values())) == 1:
            return next(iter(values.values()))
        return ", ".join(f"{preset} {v}" for preset, v in values.items())

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        listed = f" Registered: {', '.join(self.listing())}." if self.listing is not None else ""
        self.help = f"{self.base_help}{listed} [{self.shown_defaults()}]"
        return super().get_help_record(ctx)


def _click_spec(f: dataclasses.Field, spec: Any) -> dict[str, Any]:
    """click's type, flag spelling and arity for one field, from its annotation and ``Option``."""
    kind = str(f.type).replace(" ", "")
    low, high = spec.low, spec.high
    if kind in ("bool", "bool|None"):
        return {"decls": [f"{spec.cli_flag(f.name)}/{spec.off or '--no-' + spec.cli_flag(f.name)[2:]}"]}
    if spec.multiple:
        return {"decls": [spec.cli_flag(f.name)], "multiple": True, "type": click.STRING}
    if kind.startswith("tuple["):
        return {"decls": [spec.cli_flag(f.name)], "type": float, "nargs": len(kind.split(","))}
    if kind.startswith("int"):
        typ: Any = click.IntRange(low, high) if low is not None or high is not None else click.INT
    elif kind.startswith("float"):
        typ = click.FloatRange(low, high, max_open=spec.high_open) if low is not None or high is not None else click.FLOAT
    elif spec.choices is not None and not callable(spec.choices):  # a registry's names are checked by the record (did-you-mean)
        typ = click.Choice(list(spec.choices))
    elif "Path" in kind:
        typ = click.Path(path_type=Path)
    else:
        typ = click.STRING
    return {"decls": [spec.cli_flag(f.name)], "type": typ}


def record_options(record: type, *, presets: Callable[[], dict[str, Any]] | None = None) -> Callable[[F], F]:
    """A click option for every field of ``record`` whose ``Option`` is not ``by_hand``, in field order.

    Each option's value is None when not given (the preset's or the record's default then applies:
    ``record_values``); its help ends with that default, from ``presets()`` (name -> a record made by
    that preset) or, without presets, from ``record()`` itself.
    """
    from sowmeta.options import options_of

    def defaults_of(name: str) -> Callable[[], dict[str, Any]]:
        made = presets or (lambda: {"": record()})
        return lambda: {preset: getattr(value, name) for preset, value in made().items()}

    def deco(fn: F) -> F:
        for f, spec in reversed(options_of(record)):
            if spec.by_hand:
                continue
            kw = _click_spec(f, spec)
            listing = spec.choices if callable(spec.choices) else None
            fn = click.option(*kw.pop("decls"), f.name, cls=RecordOption, default=None, help=spec.help, metavar=spec.metavar,
                              defaults=defaults_of(f.name), listing=listing, **kw)(fn)
        return fn

    return deco


def record_values(record: type, options: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``record`` given on the command line, taken out of a command's ``options`` (repeated values parsed)."""
    from sowmeta.options import options_of

    values = {}
    for f, spec in options_of(record):
        if spec.by_hand or f.name not in options:
            continue
        value = options.pop(f.name)
        if value is None or (spec.multiple and not value):
            continue
        values[f.name] = spec.parse(value) if spec.parse is not None else value
    return values
