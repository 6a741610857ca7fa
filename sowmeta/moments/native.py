"""Eval-mode BatchNorm fused with the moments of its input, as ``torch.library`` operators over a small C kernel.

A collector tapping a BatchNorm's input reads every element of that map once more than plain
inference does, and on a CPU that extra pass over maps far larger than the cache is most of what
collection costs beyond inference. Inductor does not fuse a reduction with an elementwise op of
the same input into one loop, so a 40-line C kernel (``bn_moments.c``) does it: the BatchNorm's
output and the shifted per-row moments (as ``reduce.shifted_moments``) in one pass over the map.

Three operators wrap it, each with a fake (meta) implementation so that shape propagation and
``torch.compile`` see through them:

* ``sowmeta::bn_moments(x, scale, offset, ill_factor)``: collection. y, the row shifts, the float64
  mean and M2 per (image, channel) row, and how many rows are ill-conditioned (``reduce.exact_rows``
  recomputes them).
* ``sowmeta::bn_sums(x, scale, offset)``: synthesis. y, E[x] and E[x^2] (float32), differentiable in
  ``x`` (the layer is frozen); its backward is ``sowmeta::bn_sums_backward``, one pass over dy and x.

The kernel is compiled on first use with the system C compiler (``CC``, else ``cc``) against torch's
own OpenMP runtime, kept under ``<cache>/native``, and loaded from there only when this user built
it (``native_build``: owner, permissions and the sha256 recorded at the build); without a compiler,
with ``SOWMETA_COMPILE=0``, or where the build fails, ``available()`` is False. Which maps go through
the operators is ``dispatch.py``'s decision, and how a BatchNorm's own call reaches them ``recording.py``'s.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from ..env import cache_dir, compile_enabled
from .native_build import load_library

__all__ = ["NativeMoments", "available", "affine", "bn_moments", "bn_sums", "bn_sums_backward"]

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


class NativeMoments(NamedTuple):
    """What ``bn_moments`` gives besides y: per (image, channel) row its shift, mean and M2 in float64, and how many
    rows failed the conditioning test (``reduce.ILL_CONDITIONED``, applied before M2 was clamped at 0)."""

    shift: torch.Tensor  # [N, C] float32
    mean: torch.Tensor  # [N, C] float64
    m2: torch.Tensor  # [N, C] float64, clamped at 0
    ill: int


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


def available() -> bool:
    """Whether the kernel can run in this process (built or cached, compiling allowed)."""
    return _functions() is not None


def _kernel() -> _Functions:
    fns = _functions()
    if fns is None:
        raise RuntimeError("the fused BatchNorm kernel is not available; dispatch.py routes around it")
    return fns


def _rows(x: torch.Tensor) -> tuple[int, int, int]:
    """Images, channels and positions per (image, channel) row of a channels-first map."""
    n, c = x.shape[0], x.shape[1]
    return n, c, x.numel() // (n * c)


def affine(running_mean: torch.Tensor, running_var: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
           eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as y = x * scale + offset per channel (float32, detached, contiguous)."""
    with torch.no_grad():
        w = weight.float() if weight is not None else 1.0
        b = bias.float() if bias is not None else 0.0
        scale = (torch.rsqrt(running_var.float() + eps) * w).contiguous()
        return scale, (b - running_mean.float() * scale).contiguous()


@torch.library.custom_op("sowmeta::bn_moments", mutates_args=(), device_types="cpu")
def bn_moments(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, ill_factor: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """y = x * scale + offset, and per row the shift, float64 mean and M2 and (a 0-d int64) the ill-conditioned rows' count."""
    n, c, p = _rows(x)
    y, shift = torch.empty_like(x), torch.empty(n, c)
    mean, m2 = torch.empty(n, c, dtype=torch.float64), torch.empty(n, c, dtype=torch.float64)
    ill = _kernel().moments(x.data_ptr(), y.data_ptr(), scale.data_ptr(), offset.data_ptr(), shift.data_ptr(), mean.data_ptr(),
                            m2.data_ptr(), n, c, p, ill_factor, torch.get_num_threads())
    return y, shift, mean, m2, torch.tensor(ill, dtype=torch.int64)


@bn_moments.register_fake
def _(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, ill_factor: float) -> tuple[torch.Tensor, ...]:
    n, c = x.shape[0], x.shape[1]
    rows64 = x.new_empty(n, c, dtype=torch.float64)
    return torch.empty_like(x), x.new_empty(n, c), rows64, torch.empty_like(rows64), x.new_empty((), dtype=torch.int64)


@torch.library.custom_op("sowmeta::bn_sums", mutates_args=(), device_types="cpu")
def bn_sums(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y = x * scale + offset and per row E[x], E[x^2] (float32), in one read of ``x``."""
    n, c, p = _rows(x)
    y, mean, sq = torch.empty_like(x), torch.empty(n, c), torch.empty(n, c)
    _kernel().sums_forward(x.data_ptr(), y.data_ptr(), scale.data_ptr(), offset.data_ptr(), mean.data_ptr(), sq.data_ptr(), n, c, p,
                           torch.get_num_threads())
    return y, mean, sq


@bn_sums.register_fake
def _(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = x.new_empty(x.shape[0], x.shape[1])
    return torch.empty_like(x), rows, torch.empty_like(rows)


@torch.library.custom_op("sowmeta::bn_sums_backward", mutates_args=(), device_types="cpu")
def bn_sums_backward(x: torch.Tensor, dy: torch.Tensor, scale: torch.Tensor, g_mean: torch.Tensor, g_sq: torch.Tensor) -> torch.Tensor:
    """dx = scale * dy + (g_mean + 2 x g_sq) / P, in one pass over ``dy`` and ``x``."""
    n, c, p = _rows(x)
    dy, g_mean, g_sq = dy.float().contiguous(), g_mean.float().contiguous(), g_sq.float().contiguous()
    dx = torch.empty_like(x)
    _kernel().sums_backward(x.data_ptr(), dy.data_ptr(), dx.data_ptr(), scale.data_ptr(), g_mean.data_ptr(), g_sq.data_ptr(), n, c, p,
                            torch.get_num_threads())
    return dx


@bn_sums_backward.register_fake
def _(x: torch.Tensor, dy: torch.Tensor, scale: torch.Tensor, g_mean: torch.Tensor, g_sq: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _save_for_backward(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[torch.Tensor, ...], output: object) -> None:
    x, scale, _ = inputs
    ctx.save_for_backward(x, scale)


def _sums_backward(ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor, g_mean: torch.Tensor, g_sq: torch.Tensor) -> tuple[torch.Tensor, None, None]:
    x, scale = ctx.saved_tensors  # type: ignore[attr-defined]
    return bn_sums_backward(x, dy, scale, g_mean, g_sq), None, None


bn_sums.register_autograd(_sums_backward, setup_context=_save_for_backward)
