"""Taps: the layers whose features are recorded, addressed by ``named_modules()`` names.

Presets: ``bn-inputs`` (the input of every BatchNorm, DeepInversion's positions) and
``conv-outputs`` (the output of every Conv2d, for BN-free or BN-fused models). Or an explicit
list of module names or globs, each optionally suffixed ``:in`` or ``:out`` (default ``:out``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .errors import TapError
from .named import Registry

__all__ = ["Tap", "TAP_PRESETS", "Probe", "count_outputs", "describe_taps", "resolve_taps", "tap_hooks", "probe", "probe_channels"]

Position = Literal["in", "out"]
Preset = Callable[[nn.Module], list["Tap"]]
TAP_PRESETS: Registry[Preset] = Registry("tap preset", error=TapError)


@dataclass(frozen=True)
class Tap:
    """One recording position: a module's input or output.

    ``name`` is the key under which statistics are stored: the module's qualified name,
    with ``:in`` appended for explicit input taps of non-BatchNorm modules.
    """

    name: str
    module: str
    position: Position
    kind: str  # "bn-input", "conv-output", "input" or "output"
    axis: int = 1  # the feature's channel axis (1 for NCHW maps, -1 for [N, L, D] tokens and channels-last maps)


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n]


@TAP_PRESETS.register("bn-inputs")
def bn_inputs(model: nn.Module) -> list[Tap]:
    """The input of every BatchNorm layer (the paper's and DeepInversion's choice)."""
    taps = [Tap(n, n, "in", "bn-input") for n, m in _modules(model) if _is_bn(m)]
    if not taps:
        raise TapError(
            "the model has no BatchNorm layer, so taps 'bn-inputs' finds nothing; "
            "use taps 'conv-outputs' (BN-free or fused models) or name modules explicitly"
        )
    return taps


@TAP_PRESETS.register("conv-outputs")
def conv_outputs(model: nn.Module) -> list[Tap]:
    """The output of every Conv2d layer (BN-free and BN-fused models)."""
    taps = [Tap(n, n, "out", "conv-output") for n, m in _modules(model) if isinstance(m, nn.Conv2d)]
    if not taps:
        raise TapError("the model has no Conv2d layer, so taps 'conv-outputs' finds nothing; name modules explicitly")
    return taps


@TAP_PRESETS.register("auto")
def auto(model: nn.Module) -> list[Tap]:
    """BatchNorm inputs if the model has BatchNorm, else Conv2d outputs."""
    return bn_inputs(model) if any(_is_bn(m) for m in model.modules()) else conv_outputs(model)


def resolve_taps(model: nn.Module, spec: str | Sequence[str] = "auto") -> list[Tap]:
    """Turn a preset name (``TAP_PRESETS``) or module names/globs (a list, or comma-separated text) into taps, in module order.

    Raises:
        TapError: the preset finds no module, or a name or glob matches nothing.
    """
    modules = _modules(model)
    if isinstance(spec, str) and spec in TAP_PRESETS:
        return TAP_PRESETS.get(spec)(model)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise TapError(f"empty tap specification; use one of {', '.join(TAP_PRESETS.names())} or module names")
    chosen: dict[tuple[str, str], Tap] = {}
    for item in items:
        pattern, _, pos = item.partition(":")
        pos = pos or "out"
        if pos not in ("in", "out"):
            raise TapError(f"tap {item!r}: position must be ':in' or ':out', not ':{pos}'")
        hits = [(n, m) for n, m in modules if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise TapError(f"tap {item!r} matches no module of the model; list names with `sowmeta taps --model ...`")
        for n, m in hits:
            if pos == "in" and _is_bn(m):
                tap = Tap(n, n, "in", "bn-input")
            elif pos == "out" and isinstance(m, nn.Conv2d):
                tap = Tap(n, n, "out", "conv-output")
            else:
                tap = Tap(n if pos == "out" else f"{n}:in", n, pos, "output" if pos == "out" else "input")
            chosen[(n, pos)] = tap
    by_name: dict[str, Tap] = {}
    for tap in chosen.values():
        other = by_name.setdefault(tap.name, tap)
        if other is not tap:
            raise TapError(
                f"taps '{other.module}:{other.position}' and '{tap.module}:{tap.position}' would both be stored as {tap.name!r} "
                "(a BatchNorm's name stands for its input); keep one, or tap the next module's input instead"
            )
    order = {n: i for i, (n, _) in enumerate(modules)}
    return sorted(chosen.values(), key=lambda t: (order[t.module], t.position != "in"))


TapCallback = Callable[[Tap, torch.Tensor], None]


@contextmanager
def tap_hooks(model: nn.Module, taps: Sequence[Tap], callback: TapCallback) -> Iterator[None]:
    """Call ``callback(tap, feature)`` for every tap on every forward; hooks removed on exit, always.

    The callback receives the live tensor (still in the autograd graph): collectors detach,
    the synthesis engine does not. Hooks never replace the module's input or output.
    """
    named = dict(model.named_modules())
    handles = []

    def _check(tap: Tap, value: object) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or value.dim() < 2:
            raise TapError(
                f"tap {tap.name!r}: the module's {tap.position}put is not a tensor with a channel axis "
                f"(got {type(value).__name__}); tap another module"
            )
        return value

    try:
        for tap in taps:
            module = named.get(tap.module)
            if module is None:
                raise TapError(f"tap {tap.name!r}: the model has no module named {tap.module!r}")
            if tap.position == "in":

                def pre(mod: nn.Module, args: tuple, _tap: Tap = tap) -> None:
                    callback(_tap, _check(_tap, args[0] if args else None))

                handles.append(module.register_forward_pre_hook(pre))
            else:

                def post(mod: nn.Module, args: tuple, out: object, _tap: Tap = tap) -> None:
                    callback(_tap, _check(_tap, out))

                handles.append(module.register_forward_hook(post))
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class Probe:
    """What one forward pass of a random image shows: every tap's channel count and the model's number of outputs."""

    channels: dict[str, int]
    outputs: int
    shapes: dict[str, tuple[int, ...]]


def probe(model: nn.Module, taps: Sequence[Tap], image_size: int, *, device: torch.device | str = "cpu") -> Probe:
    """Channels and feature shape of every tap and the number of logits, from one forward pass of a random image."""
    from .logits import logits_of

    channels: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def record(tap: Tap, x: torch.Tensor) -> None:
        shapes[tap.name] = tuple(int(v) for v in x.shape)
        channels[tap.name] = int(x.shape[tap.axis])

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tap_hooks(model, taps, record):
            out = model(torch.rand(1, 3, image_size, image_size, device=device))
    finally:
        model.train(was_training)
    return Probe(channels, int(logits_of(out).shape[-1]), shapes)


def describe_taps(model: nn.Module, spec: str | Sequence[str], image_size: int, *, device: torch.device | str = "cpu") -> list[dict[str, object]]:
    """Every tap ``spec`` resolves to, with the shape its feature has for one image, its channel axis and channels."""
    taps = resolve_taps(model, spec)
    found = probe(model, taps, image_size, device=device)
    return [
        {"name": t.name, "module": t.module, "position": t.position, "kind": t.kind, "shape": list(found.shapes[t.name]),
         "axis": t.axis, "channels": found.channels[t.name]}
        for t in taps
    ]


def count_outputs(model: nn.Module, image_size: int, *, device: torch.device | str = "cpu") -> int:
    """How many logits ``model`` gives for a random image of ``image_size`` (``probe`` without taps)."""
    return probe(model, [], image_size, device=device).outputs


def probe_channels(model: nn.Module, taps: Sequence[Tap], image_size: int, *, device: torch.device | str = "cpu") -> dict[str, int]:
    """Channels of every tap, found by one forward pass of a random image of ``image_size``."""
    return probe(model, taps, image_size, device=device).channels
