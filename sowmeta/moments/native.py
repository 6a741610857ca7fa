"""Eval-mode BatchNorm fused with the moments of its input: one read of each tapped map on the CPU.

A collector tapping a BatchNorm's input reads every element of that map once more than plain
inference does, and on a CPU that extra pass over maps far larger than the cache is most of what
collection costs beyond inference. Inductor does not fuse a reduction with an elementwise op of
the same input into one loop, so a 40-line C kernel (``bn_moments.c``) does it: the BatchNorm's
output and the shifted per-row moments (as ``reduce.shifted_moments``) in one pass. For
synthesis it is an autograd Function: forward y, E[x], E[x^2]; backward dx in one pass over dy and x.

It is compiled on first use with the system C compiler (``CC``, else ``cc``) against torch's own
OpenMP runtime and kept under ``<cache>/native``, and loaded from there only when this user built
it (``native_build``: owner, permissions and the sha256 recorded at the build); without a
compiler, with ``SOWMETA_COMPILE=0``, or where the build fails, ``available()`` is False and the
hooks record as before.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..env import cache_dir, compile_enabled
from .native_build import load_library
from .class_moments import ILL_CONDITIONED, RowMoments
from ..models.taps import Tap, tap_hooks

__all__ = ["available", "batchnorm_moments", "batchnorm_sums", "fused_batchnorm_taps", "recording_taps"]

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("bn_moments.c")
# -O3 and the target's vector width; reassociation lets the two sums vectorize. No -ffast-math:
# NaN and infinity in a feature must still come out as NaN and infinity.
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math", "-fno-signed-zeros", "-shared", "-fPIC"]


class _Functions(NamedTuple):
    """The kernel's entry points (see ``bn_moments.c``)."""

    moments: Callable[..., int]  # collection: y, shift, float64 mean and M2, ill-conditioned count
    sums_forward: Callable[..., None]  # synthesis: y, E[x], E[x^2]
    sums_backward: Callable[..., None]  # synthesis: dx from dy and the moments' gradients


class _Library:
    """The compiled kernel, built or found in the cache on first use; None for the process after a failure."""

    def __init__(self) -> None:
        self._fn: _Functions | None = None
        self._tried = False

    def get(self) -> _Functions | None:
        if not self._tried:
            self._tried = True
            try:
                self._fn = self._load()
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [""])[0]
                log.warning("the fused BatchNorm kernel is unavailable (%s: %s); recording through hooks instead", type(exc).__name__, first[:200])
        return self._fn

    def _load(self) -> _Functions | None:
        if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "aarch64"):
            return None
        compiler = shutil.which(os.environ.get("CC") or "cc")
        runtime = _torch_openmp()
        if compiler is None or runtime is None:
            log.info("no C compiler or no OpenMP runtime beside torch: the fused BatchNorm kernel is off")
            return None
        lib = load_library(cache_dir() / "native", _SOURCE, compiler, _FLAGS, runtime)
        p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib.bn_moments.argtypes = [p, p, p, p, p, p, p, i64, i64, i64, ctypes.c_double, i32]
        lib.bn_moments.restype = i64
        lib.bn_sums_forward.argtypes = [p, p, p, p, p, p, i64, i64, i64, i32]
        lib.bn_sums_forward.restype = None
        lib.bn_sums_backward.argtypes = [p, p, p, p, p, p, i64, i64, i64, i32]
        lib.bn_sums_backward.restype = None
        return _Functions(lib.bn_moments, lib.bn_sums_forward, lib.bn_sums_backward)


def _torch_openmp() -> Path | None:
    """The libgomp torch itself loads, so that the kernel shares torch's thread pool instead of starting a second."""
    root = Path(torch.__file__).parent
    for folder in (root / "lib", root.parent / "torch.libs"):
        found = sorted(folder.glob("libgomp*.so*")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


_LIBRARY = _Library()


def _functions() -> _Functions | None:
    return _LIBRARY.get() if compile_enabled() else None


def _rows(x: torch.Tensor) -> tuple[int, int, int]:
    """Images, channels and positions per (image, channel) row of a channels-first map."""
    n, c = x.shape[0], x.shape[1]
    return n, c, x.numel() // (n * c)


def available() -> bool:
    """Whether the fused kernel can run in this process (built or cached, compiling allowed)."""
    return _functions() is not None


def _tail(bn: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What ``bn``'s forward does after the normalization, for a forward known to be BatchNorm then that; None for any other.

    A stock ``nn.BatchNorm*d``: nothing. timm's ``BatchNormAct2d`` (EfficientNet, RegNet, ...): its
    ``drop`` then its ``act``. A subclass that overrides either forward is not known.
    """
    if not isinstance(bn, _BatchNorm):
        return None
    forward = type(bn).forward
    if forward is _BatchNorm.forward:
        return _identity
    if forward.__qualname__ == "BatchNormAct2d.forward" and forward.__module__.startswith("timm."):
        return lambda y: bn.act(bn.drop(y))
    return None


def _identity(y: torch.Tensor) -> torch.Tensor:
    return y


def _eligible(bn: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``_tail(bn)`` for a stock BatchNorm (or timm's BatchNormAct2d) using its running statistics, on a contiguous float32 CPU map with positions; else None."""
    tail = _tail(bn)
    ok = (
        tail is not None
        and (tail is _identity or x.dim() == 4)  # BatchNormAct2d takes 2-d maps only
        and not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() >= 3
        and x.numel() > 0
        and x.is_contiguous()
    )
    return tail if ok else None


def _affine(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BatchNorm as y = x * scale + offset per channel (float32, detached)."""
    with torch.no_grad():
        weight = bn.weight.float() if bn.weight is not None else 1.0
        bias = bn.bias.float() if bn.bias is not None else 0.0
        scale = (torch.rsqrt(bn.running_var.float() + bn.eps) * weight).contiguous()
        return scale, (bias - bn.running_mean.float() * scale).contiguous()


def batchnorm_moments(bn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, RowMoments] | None:
    """``bn(x)`` and the per-image, per-channel moments of ``x`` (``class_moments.per_image_moments``'s) in one pass; None where not fused.

    Not fused (None): training mode, no running statistics, a BatchNorm subclass with its own
    forward, autograd on, a map that is not a contiguous float32 CPU tensor with positions, or
    no kernel (``available()``). The caller then runs ``bn`` itself.
    """
    tail = None if torch.is_grad_enabled() else _eligible(bn, x)
    if tail is None:
        return None
    fns = _functions()
    if fns is None:
        return None
    n, c, p = _rows(x)
    scale, offset = _affine(bn)  # type: ignore[arg-type]
    y = torch.empty_like(x)
    shift = torch.empty(n, c)
    mean, m2 = torch.empty(n, c, dtype=torch.float64), torch.empty(n, c, dtype=torch.float64)
    ill = fns.moments(x.data_ptr(), y.data_ptr(), scale.data_ptr(), offset.data_ptr(), shift.data_ptr(), mean.data_ptr(),
                      m2.data_ptr(), n, c, p, ILL_CONDITIONED, torch.get_num_threads())
    return tail(y), RowMoments(shift, mean, m2, int(ill))


class _BatchNormSums(torch.autograd.Function):
    """y = x * scale + offset and per-row E[x], E[x^2], differentiable in ``x`` only (the layer is frozen)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, fns: _Functions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        n, c, p = _rows(x)
        y = torch.empty_like(x)
        mean, sq = torch.empty(n, c), torch.empty(n, c)
        fns.sums_forward(x.data_ptr(), y.data_ptr(), scale.data_ptr(), offset.data_ptr(), mean.data_ptr(), sq.data_ptr(), n, c, p, torch.get_num_threads())
        ctx.save_for_backward(x, scale)
        ctx.fns = fns  # type: ignore[attr-defined]
        return y, mean, sq

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor, g_mean: torch.Tensor, g_sq: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        x, scale = ctx.saved_tensors  # type: ignore[attr-defined]
        n, c, p = _rows(x)
        dy, g_mean, g_sq = dy.float().contiguous(), g_mean.float().contiguous(), g_sq.float().contiguous()
        dx = torch.empty_like(x)
        ctx.fns.sums_backward(x.data_ptr(), dy.data_ptr(), dx.data_ptr(), scale.data_ptr(), g_mean.data_ptr(), g_sq.data_ptr(), n, c, p, torch.get_num_threads())  # type: ignore[attr-defined]
        return dx, None, None, None


def batchnorm_sums(bn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None:
    """``bn(x)`` and per-image, per-channel E[x], E[x^2] (float32), both differentiable in ``x``, one pass each way; None where not fused.

    For synthesis: autograd on, the BatchNorm's own parameters frozen (no gradient is computed
    for them); otherwise as ``batchnorm_moments``.
    """
    tail = _eligible(bn, x) if torch.is_grad_enabled() else None
    if tail is None or any(t.requires_grad for t in bn.parameters(recurse=False)):
        return None
    fns = _functions()
    if fns is None:
        return None
    scale, offset = _affine(bn)  # type: ignore[arg-type]
    y, mean, sq = _BatchNormSums.apply(x, scale, offset, fns)
    return tail(y), (mean, sq)


TapRecord = Callable[..., None]


@contextmanager
def fused_batchnorm_taps(model: nn.Module, taps: Sequence[Tap], record: TapRecord, *, differentiable: bool = False) -> Iterator[set[str]]:
    """For the duration of the block, BatchNorm-input taps record through the fused kernel; yields their tap names.

    Each such BatchNorm's forward is replaced on the instance: where the kernel applies it calls
    ``record(tap, x, moments)`` and returns the kernel's output; otherwise ``record(tap, x)``
    and the module's own forward. ``moments``: ``batchnorm_moments``' RowMoments (collection), or
    with ``differentiable`` ``batchnorm_sums``' (E[x], E[x^2]) in the autograd graph (synthesis).
    The caller hooks the other taps as usual.
    The instance attribute is removed on exit, always. Nothing is patched when the kernel is
    unavailable, so the yielded set is then empty.
    """
    patched: list[nn.Module] = []
    names: set[str] = set()
    try:
        if available():
            named = dict(model.named_modules())
            for tap in taps:
                module = named.get(tap.module)
                if (
                    tap.position != "in"
                    or tap.axis not in (None, 1)
                    or tap.prefix_tokens
                    or _tail(module) is None
                    or "forward" in vars(module)
                ):
                    continue
                module.forward = _fused_forward(module, tap, record, batchnorm_sums if differentiable else batchnorm_moments)  # type: ignore[method-assign]
                patched.append(module)
                names.add(tap.name)
        yield names
    finally:
        for module in patched:
            vars(module).pop("forward", None)


def _fused_forward(module: _BatchNorm, tap: Tap, record: TapRecord, kernel: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, object] | None]) -> Callable[[torch.Tensor], torch.Tensor]:
    own = type(module).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        fused = kernel(module, x) if isinstance(x, torch.Tensor) and not torch.compiler.is_compiling() else None
        if fused is None:
            record(tap, x)
            return own(module, x)
        y, moments = fused
        record(tap, x, moments)
        return y

    return forward


@contextmanager
def recording_taps(model: nn.Module, taps: Sequence[Tap], record: TapRecord, *, differentiable: bool = False) -> Iterator[None]:
    """``record`` every tap on every forward: BatchNorm inputs through ``fused_batchnorm_taps``, the rest through ``models.taps.tap_hooks``."""
    with fused_batchnorm_taps(model, taps, record, differentiable=differentiable) as fused:
        with tap_hooks(model, [t for t in taps if t.name not in fused], record):
            yield
