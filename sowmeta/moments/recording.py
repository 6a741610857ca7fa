"""Recording taps while a model runs: each tap's feature handed over on every forward, BatchNorm inputs through the kernel.

``recording_taps(model, taps, record, contract=...)`` calls ``record(tap, x, native)`` for every
tap on every forward: ``x`` the feature (still in the autograd graph), ``native`` the moments the
fused kernel took from it, or None (the receiver computes them: ``dispatch.central_moments`` or
``dispatch.raw_moments``).

A tapped BatchNorm is not changed. A forward pre-hook notes its input and, while the layer runs,
enters a ``TorchFunctionMode`` (PyTorch's interface for intercepting calls) that sees the layer's
``F.batch_norm`` call: when that call normalizes the noted input with the layer's running
statistics and ``dispatch.native_applies`` allows it, the kernel computes the output and the
input's moments in one read (``native.py``) and the output is returned as the call's; timm's
``BatchNormAct2d`` then applies its activation to it as usual. The forward hook (run even when the
forward fails) leaves the mode and hands the feature over. Other taps are read by
``models.taps.tap_hooks``. Every hook is removed on exit, always.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode

from ..models.taps import Tap, tap_hooks
from . import native
from .dispatch import Contract, native_applies
from .reduce import ILL_CONDITIONED

__all__ = ["Record", "recording_taps", "fused_batchnorms"]

Record = Callable[[Tap, torch.Tensor, Any], None]


class _BatchNormCall(TorchFunctionMode):
    """Active while one tapped BatchNorm runs: its ``F.batch_norm`` call on its own input goes through the kernel."""

    def __init__(self, tap: Tap, module: _BatchNorm, contract: Contract, record: Record) -> None:
        super().__init__()
        self.tap, self.module, self.contract, self.record = tap, module, contract, record
        self.input: torch.Tensor | None = None
        self.taken: Any = None  # the kernel's moments of the current call
        self.active = False

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.batch_norm:
            out = self._fused(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)

    def _fused(self, input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
               momentum: float | None = 0.1, eps: float = 1e-5) -> torch.Tensor | None:
        if input is not self.input or running_mean is not self.module.running_mean or self.taken is not None:
            return None
        if not native_applies(input, self.contract, training=training, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias):
            return None
        scale, offset = native.affine(running_mean, running_var, weight, bias, eps)  # type: ignore[arg-type]
        if self.contract == "central":
            y, shift, mean, m2, ill = native.bn_moments(input, scale, offset, ILL_CONDITIONED)
            self.taken = native.NativeMoments(shift, mean, m2, int(ill))
        else:
            y, mean, sq = native.bn_sums(input, scale, offset)
            self.taken = (mean, sq)
        return y

    def before(self, module: nn.Module, args: tuple) -> None:
        """Forward pre-hook: note the layer's input and intercept its calls while it runs."""
        self.input, self.taken = (args[0] if args and isinstance(args[0], torch.Tensor) else None), None
        if self.input is not None and not torch.compiler.is_compiling():
            self.__enter__()
            self.active = True

    def after(self, module: nn.Module, args: tuple, output: object) -> None:
        """Forward hook, run even when the forward failed (``output`` is then None): stop intercepting, hand the input over."""
        self.leave()
        x, taken, self.input, self.taken = self.input, self.taken, None, None
        if x is not None and output is not None:
            self.record(self.tap, x, taken)

    def leave(self) -> None:
        if self.active:
            self.active = False
            self.__exit__(None, None, None)


def _fusable(tap: Tap, module: nn.Module | None) -> bool:
    """A BatchNorm's input, channels on axis 1, no token positions left out: what the kernel can compute."""
    return isinstance(module, _BatchNorm) and tap.position == "in" and tap.axis in (None, 1) and not tap.prefix_tokens


@contextmanager
def fused_batchnorms(model: nn.Module, taps: Sequence[Tap], record: Record, *, contract: Contract) -> Iterator[set[str]]:
    """For the block, the BatchNorm-input taps record through the kernel where it applies; yields their names.

    ``record(tap, x, moments)`` is called after each such layer's forward, ``moments`` the kernel's
    (``native.NativeMoments`` for ``central``, (E[x], E[x^2]) for ``raw``) or None where the call was
    not fused. Nothing is hooked when the kernel is unavailable: the yielded set is then empty.
    """
    names: set[str] = set()
    with ExitStack() as stack:
        if native.available():
            named = dict(model.named_modules())
            for tap in taps:
                module = named.get(tap.module)
                if not _fusable(tap, module):
                    continue
                call = _BatchNormCall(tap, module, contract, record)  # type: ignore[arg-type]
                stack.callback(call.leave)  # a forward interrupted past its hooks (KeyboardInterrupt) leaves no mode behind
                stack.callback(module.register_forward_pre_hook(call.before).remove)  # type: ignore[union-attr]
                stack.callback(module.register_forward_hook(call.after, always_call=True).remove)  # type: ignore[union-attr]
                names.add(tap.name)
        yield names


@contextmanager
def recording_taps(model: nn.Module, taps: Sequence[Tap], record: Record, *, contract: Contract) -> Iterator[None]:
    """``record(tap, x, native)`` for every tap on every forward: BatchNorm inputs through ``fused_batchnorms``, the rest by ``tap_hooks``."""
    with fused_batchnorms(model, taps, record, contract=contract) as fused:
        with tap_hooks(model, [t for t in taps if t.name not in fused], lambda tap, x: record(tap, x, None)):
            yield
