"""Taps: the layers whose features are recorded, addressed by ``named_modules()`` names.

A tap records per-channel statistics over every axis of a feature but the batch and the
channel axis. The channel axis is decided by the module: 1 for BatchNorm/GroupNorm inputs and
Conv2d outputs (NCHW), the last for LayerNorm inputs and Linear features ([N, L, D] token
sequences, channels-last maps); a LayerNorm2d-style module (LayerNorm over the channels of an
NCHW map) uses 1. Other modules' features get theirs from their shape at the first forward:
the axis whose size is the module's own normalization width, else 1 for 4-D maps and the last
for token sequences. ``name@AXIS`` forces it.

Presets (``TAP_PRESETS``): ``bn-inputs``, ``ln-inputs``, ``norm-inputs`` (BatchNorm, LayerNorm,
GroupNorm), ``conv-outputs``, ``block-outputs`` (every residual or transformer block), and
``auto`` (BatchNorm inputs if any, else normalization inputs, else Conv2d outputs). Or an
explicit list of module names or globs, each optionally suffixed ``:in`` or ``:out`` (default
``:out``) and ``@AXIS``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from ..errors import TapError
from ..named import Registry

__all__ = [
    "Tap",
    "TAP_PRESETS",
    "Probe",
    "count_outputs",
    "describe_taps",
    "resolve_taps",
    "resolve_axes",
    "infer_axis",
    "tap_hooks",
    "probe",
    "probe_channels",
]

Position = Literal["in", "out"]
Preset = Callable[[nn.Module], list["Tap"]]
TAP_PRESETS: Registry[Preset] = Registry("tap preset", error=TapError)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_ITEM_RE = re.compile(r"^(?P<pattern>[^:@]+)(?::(?P<pos>[^@]*))?(?:@(?P<axis>-?\d+))?$")


@dataclass(frozen=True)
class Tap:
    """One recording position: a module's input or output.

    ``name`` is the key under which statistics are stored: the module's qualified name,
    with ``:in`` appended for explicit input taps of modules other than normalization layers.
    ``axis`` is the feature's channel axis (None: decided from its shape at the first forward,
    ``resolve_axes``); ``prefix_tokens`` leading positions of a token sequence (a ViT's class
    token) are left out of the statistics.
    """

    name: str
    module: str
    position: Position
    kind: str  # "bn-input", "ln-input", "norm-input", "conv-output", "block-output", "input" or "output"
    axis: int | None = 1
    prefix_tokens: int = 0


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _is_ln(m: nn.Module) -> bool:
    return isinstance(m, nn.LayerNorm) or type(m).__name__ in ("LayerNorm", "LayerNorm2d", "RMSNorm")


def _ln_axis(m: nn.Module) -> int:
    """A LayerNorm normalizes its input's last axis; LayerNorm2d variants (torchvision, timm) the channels of NCHW."""
    return 1 if type(m).__name__.lower().endswith("2d") else -1


def _norm_width(m: nn.Module) -> int | None:
    """The channel count a normalization layer normalizes (None for other modules)."""
    if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        return int(m.num_features)
    if isinstance(m, nn.GroupNorm):
        return int(m.num_channels)
    shape = getattr(m, "normalized_shape", None)
    return int(shape[-1]) if shape else None


def _module_axis(m: nn.Module, position: Position) -> int | None:
    """The channel axis the module's kind decides (None: decide from the feature's shape)."""
    if _is_ln(m):
        return _ln_axis(m)
    if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
        return 1
    if isinstance(m, nn.Linear):
        return -1
    if isinstance(m, nn.Conv2d) and position == "out":
        return 1
    return None


def infer_axis(module: nn.Module, shape: Sequence[int]) -> int:
    """The channel axis of a feature of ``shape`` produced at ``module`` when its kind does not say.

    The axis (1 or the last) whose size is the width of the last normalization layer inside the
    module; else 1 for a 4-D map and the last axis for a token sequence.
    """
    if len(shape) <= 2:
        return 1
    norms = [m for m in module.modules() if isinstance(m, _NORMS) or _is_ln(m)]
    width = _norm_width(norms[-1]) if norms else None
    last = len(shape) - 1
    fits = [a for a in (1, last) if shape[a] == width]
    if len(fits) == 1:
        return fits[0] if fits[0] == 1 else -1
    if len(fits) == 2:
        return -1 if _is_ln(norms[-1]) and _ln_axis(norms[-1]) == -1 else 1
    return 1 if len(shape) == 4 else -1


def _modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n]


def _preset(model: nn.Module, pick: Callable[[nn.Module], bool], position: Position, kind: str, what: str, hint: str) -> list[Tap]:
    taps = [Tap(n, n, position, kind, _module_axis(m, position)) for n, m in _modules(model) if pick(m)]
    if not taps:
        raise TapError(f"the model has no {what}, so taps {kind + 's'!r} finds nothing; {hint}")
    return taps


@TAP_PRESETS.register("bn-inputs")
def bn_inputs(model: nn.Module) -> list[Tap]:
    """The input of every BatchNorm layer (the paper's and DeepInversion's choice)."""
    return _preset(model, _is_bn, "in", "bn-input", "BatchNorm layer",
                   "use taps 'norm-inputs' or 'conv-outputs' (BN-free or fused models) or name modules explicitly")


@TAP_PRESETS.register("ln-inputs")
def ln_inputs(model: nn.Module) -> list[Tap]:
    """The input of every LayerNorm (transformers, ConvNeXt): per-feature statistics over the tokens."""
    return _preset(model, _is_ln, "in", "ln-input", "LayerNorm", "use taps 'norm-inputs' or 'conv-outputs'")


def _norm_kind(m: nn.Module) -> str:
    return "bn-input" if _is_bn(m) else "ln-input" if _is_ln(m) else "norm-input"


@TAP_PRESETS.register("norm-inputs")
def norm_inputs(model: nn.Module) -> list[Tap]:
    """The input of every BatchNorm, LayerNorm and GroupNorm (kinds ``bn-input``, ``ln-input``, ``norm-input``)."""
    taps = [Tap(n, n, "in", _norm_kind(m), _module_axis(m, "in")) for n, m in _modules(model) if isinstance(m, _NORMS) or _is_ln(m)]
    if not taps:
        raise TapError("the model has no normalization layer, so taps 'norm-inputs' finds nothing; use taps 'conv-outputs' or 'block-outputs'")
    return taps


@TAP_PRESETS.register("conv-outputs")
def conv_outputs(model: nn.Module) -> list[Tap]:
    """The output of every Conv2d layer (BN-free and BN-fused models)."""
    return _preset(model, lambda m: isinstance(m, nn.Conv2d), "out", "conv-output", "Conv2d layer", "name modules explicitly")


def _blocks(model: nn.Module) -> list[str]:
    """Residual and transformer blocks: composite modules held in a Sequential or ModuleList (outermost only)."""
    found: list[str] = []
    for name, m in _modules(model):
        if any(name.startswith(b + ".") for b in found):
            continue
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        composite = not isinstance(m, (nn.Sequential, nn.ModuleList)) and any(True for _ in m.children())
        has_layers = any(isinstance(c, (*_NORMS, nn.Conv2d, nn.Linear)) or _is_ln(c) for c in m.modules())
        if isinstance(parent, (nn.Sequential, nn.ModuleList)) and composite and has_layers:
            found.append(name)
    return found


@TAP_PRESETS.register("block-outputs")
def block_outputs(model: nn.Module) -> list[Tap]:
    """The output of every residual or transformer block (a composite module inside a Sequential or ModuleList)."""
    taps = [Tap(n, n, "out", "block-output", None) for n in _blocks(model)]
    if not taps:
        raise TapError("the model has no blocks in a Sequential or ModuleList, so taps 'block-outputs' finds nothing; name modules explicitly")
    return taps


@TAP_PRESETS.register("auto")
def auto(model: nn.Module) -> list[Tap]:
    """BatchNorm inputs if the model has BatchNorm, else normalization inputs (LayerNorm, GroupNorm), else Conv2d outputs."""
    mods = list(model.modules())
    if any(_is_bn(m) for m in mods):
        return bn_inputs(model)
    if any(isinstance(m, _NORMS) or _is_ln(m) for m in mods):
        return norm_inputs(model)
    return conv_outputs(model)


def _explicit(n: str, m: nn.Module, pos: str, axis: int | None) -> Tap:
    if pos == "in" and (isinstance(m, _NORMS) or _is_ln(m)):
        tap = Tap(n, n, "in", _norm_kind(m), _module_axis(m, "in"))
    elif pos == "out" and isinstance(m, nn.Conv2d):
        tap = Tap(n, n, "out", "conv-output", 1)
    else:
        tap = Tap(n if pos == "out" else f"{n}:in", n, pos, "output" if pos == "out" else "input", _module_axis(m, pos))  # type: ignore[arg-type]
    return tap if axis is None else replace(tap, axis=axis)


def resolve_taps(model: nn.Module, spec: str | Sequence[str] = "auto", *, prefix_tokens: int = 0) -> list[Tap]:
    """Turn a preset name (``TAP_PRESETS``) or module names/globs (a list, or comma-separated text) into taps, in module order.

    ``prefix_tokens`` leading positions of token-sequence features are left out (a ViT's class token).

    Raises:
        TapError: the preset finds no module, or a name or glob matches nothing.
    """
    if prefix_tokens < 0:
        raise TapError(f"prefix tokens must be 0 or more, not {prefix_tokens}")
    modules = _modules(model)
    if isinstance(spec, str) and spec in TAP_PRESETS:
        return [replace(t, prefix_tokens=prefix_tokens) for t in TAP_PRESETS.get(spec)(model)]
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise TapError(f"empty tap specification; use one of {', '.join(TAP_PRESETS.names())} or module names")
    chosen: dict[tuple[str, str], Tap] = {}
    for item in items:
        match = _ITEM_RE.match(item)
        pos = (match.group("pos") if match else None) or "out"
        if match is None or pos not in ("in", "out"):
            raise TapError(f"tap {item!r}: the position must be ':in' or ':out' (MODULE[:in|:out][@AXIS], e.g. 'layer1.*:in' or 'blocks.3@-1')")
        axis = int(match.group("axis")) if match.group("axis") else None
        if axis == 0:
            raise TapError(f"tap {item!r}: axis 0 is the batch; the channel axis is 1, -1 or another")
        hits = [(n, m) for n, m in modules if fnmatch.fnmatchcase(n, match.group("pattern"))]
        if not hits:
            raise TapError(f"tap {item!r} matches no module of the model; list names with `sowmeta taps MODEL`")
        for n, m in hits:
            chosen[(n, pos)] = replace(_explicit(n, m, pos, axis), prefix_tokens=prefix_tokens)
    by_name: dict[str, Tap] = {}
    for tap in chosen.values():
        other = by_name.setdefault(tap.name, tap)
        if other is not tap:
            raise TapError(
                f"taps '{other.module}:{other.position}' and '{tap.module}:{tap.position}' would both be stored as {tap.name!r} "
                "(a normalization layer's name stands for its input); keep one, or tap the next module's input instead"
            )
    order = {n: i for i, (n, _) in enumerate(modules)}
    return sorted(chosen.values(), key=lambda t: (order[t.module], t.position != "in"))


def resolve_axes(model: nn.Module, taps: Sequence[Tap], shapes: dict[str, tuple[int, ...]]) -> list[Tap]:
    """``taps`` with every undecided axis (None) decided from the feature shapes a forward pass saw (``infer_axis``)."""
    named = dict(model.named_modules())
    return [t if t.axis is not None else replace(t, axis=infer_axis(named[t.module], shapes[t.name])) for t in taps]


TapCallback = Callable[[Tap, torch.Tensor], None]


@contextmanager
def tap_hooks(model: nn.Module, taps: Sequence[Tap], callback: TapCallback) -> Iterator[None]:
    """Call ``callback(tap, feature)`` for every tap on every forward; hooks removed on exit, always.

    The callback receives the live tensor (still in the autograd graph; a token sequence
    without the tap's prefix tokens): collectors detach, the synthesis engine does not. Hooks
    never replace the module's input or output.
    """
    named = dict(model.named_modules())
    handles = []

    def _check(tap: Tap, value: object) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or value.dim() < 2:
            raise TapError(
                f"tap {tap.name!r}: the module's {tap.position}put is not a tensor with a channel axis "
                f"(got {type(value).__name__}); tap another module"
            )
        if tap.prefix_tokens:
            if value.dim() != 3 or value.shape[1] <= tap.prefix_tokens:
                raise TapError(f"tap {tap.name!r}: prefix tokens apply to token sequences [N, L, D], not a feature of shape {tuple(value.shape)}")
            value = value[:, tap.prefix_tokens :]
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
    taps: list[Tap]  # the taps with every channel axis decided


def probe(model: nn.Module, taps: Sequence[Tap], image_size: int, *, device: torch.device | str = "cpu") -> Probe:
    """Channels and feature shape of every tap (axes decided) and the number of logits, from one forward pass of a random image."""
    from ..logits import logits_of

    shapes: dict[str, tuple[int, ...]] = {}

    def record(tap: Tap, x: torch.Tensor) -> None:
        shapes[tap.name] = tuple(int(v) for v in x.shape)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tap_hooks(model, taps, record):
            out = model(torch.rand(1, 3, image_size, image_size, device=device))
    finally:
        model.train(was_training)
    missing = [t.name for t in taps if t.name not in shapes]
    if missing:
        raise TapError(f"tap {missing[0]!r}: its module did not run in a forward pass; tap a module the model uses")
    resolved = resolve_axes(model, taps, shapes)
    channels = {t.name: shapes[t.name][t.axis] for t in resolved}  # type: ignore[index]
    return Probe(channels, int(logits_of(out).shape[-1]), shapes, resolved)


def describe_taps(model: nn.Module, spec: str | Sequence[str], image_size: int, *, device: torch.device | str = "cpu") -> list[dict[str, object]]:
    """Every tap ``spec`` resolves to, with the shape its feature has for one image, its channel axis and channels."""
    found = probe(model, resolve_taps(model, spec), image_size, device=device)
    return [
        {"name": t.name, "module": t.module, "position": t.position, "kind": t.kind, "shape": list(found.shapes[t.name]),
         "axis": t.axis, "channels": found.channels[t.name]}
        for t in found.taps
    ]


def count_outputs(model: nn.Module, image_size: int, *, device: torch.device | str = "cpu") -> int:
    """How many logits ``model`` gives for a random image of ``image_size`` (``probe`` without taps)."""
    return probe(model, [], image_size, device=device).outputs


def probe_channels(model: nn.Module, taps: Sequence[Tap], image_size: int, *, device: torch.device | str = "cpu") -> dict[str, int]:
    """Channels of every tap, found by one forward pass of a random image of ``image_size``."""
    return probe(model, taps, image_size, device=device).channels
