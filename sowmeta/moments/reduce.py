"""Per-image, per-channel E[x] and E[x^2] of a feature map in one pass (a compiled kernel, eager fallback).

Both the collector and the synthesis engine reduce every tapped map to these two moments. Eager
PyTorch needs two reads of the map for them (a sum, then a norm or a square), and a third when
the map is bf16 (the upcast); a ``torch.compile``d reduction reads each element once and fuses
the upcast. The backward, d/dx = (g_mean + 2 x g_sq) / n, is one multiply-add per element, and
compiled it can also add the gradient that reaches the map from its own layer in the same pass.

Compiling costs seconds once per process, so on the CPU it is used only for maps large enough to
pay it back (below that the eager ops cost about as much); where compiling is unavailable (no
C++ compiler, ``SOWMETA_COMPILE=0``) or fails, the eager ops give the same numbers up to float32
rounding, and the run goes on.

Layouts of the forward: ``[N, C, P]`` (channels first: NCHW maps flattened, ``last=False``) or
``[N, P, C]`` (channels last: token sequences, channels-last maps, ``last=True``), read in place.
The backward works on the map in its own shape, channels on ``axis``, any memory format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..env import compile_enabled

__all__ = ["rows_view", "mean_and_square", "shifted_moments", "row_shift", "moments_backward", "compiled_kernels", "kernel_wanted", "COMPILE_MIN_ELEMENTS"]

log = logging.getLogger(__name__)

# Maps smaller than this are reduced eagerly. CPU (4 MiB of float32): there the two eager reads hit
# the cache and cost about what the compiled call does, and a small model's short run would not
# earn back the seconds a compile takes. CUDA: the kernel saves a pass at any size worth a launch.
COMPILE_MIN_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 16}

Moments = tuple[torch.Tensor, torch.Tensor]


def rows_view(x: torch.Tensor, axis: int = 1) -> tuple[torch.Tensor, bool]:
    """A feature with channels on ``axis`` as [N, C, P] (False) or [N, P, C] (True), whichever is a view of its memory.

    Axis 1 of an NCHW map is [N, C, H*W], or [N, H*W, C] when the map is channels-last; the last
    axis ([N, L, D] tokens) is [N, L, D]; another axis is moved last first (a copy).
    """
    axis = axis % x.dim()
    if axis == 0:
        raise ValueError("the channel axis cannot be the batch axis (0)")
    if x.dim() == 2:  # [N, C]: one position
        return x.unsqueeze(2), False
    if axis == 1:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return x.permute(0, 2, 3, 1).flatten(1, 2), True
        return x.flatten(2), False
    if axis != x.dim() - 1:
        x = x.movedim(axis, -1)
    return x.reshape(x.shape[0], -1, x.shape[-1]), True


def _eager_forward(x: torch.Tensor, last: bool, shift: torch.Tensor | None = None) -> Moments:
    """Eager ops: ``_fused_forward``'s, except channels-first on the CPU: a sum and a vector norm (two reads, no temporary)."""
    if x.is_cuda or last:  # a norm across the strided position axis is slow; squaring into a temporary is not
        return _fused_forward(x, last, shift)
    flat = x if x.dtype in (torch.float32, torch.float64) else x.float()
    if shift is not None:
        flat = flat - shift.unsqueeze(2)
    n = flat.shape[2]
    return flat.sum(2) / n, torch.linalg.vector_norm(flat, 2, dim=2).square_() / n


def _fused_forward(x: torch.Tensor, last: bool, shift: torch.Tensor | None = None) -> Moments:
    """What the compiler fuses into one read: upcast, shift, sum, sum of squares, scale (CUDA: a Welford pass)."""
    flat = x if x.dtype in (torch.float32, torch.float64) else x.float()
    dim = 1 if last else 2
    if shift is not None:
        flat = flat - shift.unsqueeze(dim)
    if flat.is_cuda:
        var, mean = torch.var_mean(flat, dim=dim, correction=0)
        return mean, var + mean * mean
    n = flat.shape[dim]
    return flat.sum(dim) / n, (flat * flat).sum(dim) / n


def _backward(x: torch.Tensor, g_mean: torch.Tensor, g_sq: torch.Tensor, axis: int, grad: torch.Tensor | None) -> torch.Tensor:
    """``grad`` (or 0) + (g_mean + 2 x g_sq) / n, broadcast over the positions of ``x``, in the dtype of ``x``."""
    shape = [x.shape[0]] + [x.shape[d] if d == axis else 1 for d in range(1, x.dim())]
    n = x.numel() // (x.shape[0] * x.shape[axis])
    a = (g_mean / n).view(shape)
    b = (g_sq * (2.0 / n)).view(shape)
    out = torch.addcmul(a, x, b) if grad is None else torch.addcmul(grad + a, x, b)
    return out.to(x.dtype)


class _Kernels:
    """The compiled forward and backward, built on first use; switched off for good after a failure."""

    def __init__(self) -> None:
        self.enabled = True
        self._compiled: dict[str, Callable[..., object]] = {}

    def get(self, name: str, fn: Callable[..., object]) -> Callable[..., object]:
        kernel = self._compiled.get(name)
        if kernel is None:
            quiet = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found": noise on a CPU-only machine
            if quiet.level == logging.NOTSET:
                quiet.setLevel(logging.ERROR)
            kernel = self._compiled[name] = torch.compile(fn, dynamic=True)
        return kernel

    def wanted(self, x: torch.Tensor) -> bool:
        """Compile for this map? Large maps only, never inside an outer compile (it fuses the eager ops itself)."""
        least = COMPILE_MIN_ELEMENTS.get(x.device.type)
        return (
            self.enabled
            and least is not None
            and x.numel() >= least
            and not torch.compiler.is_compiling()
            and compile_enabled()
        )

    def disable(self, exc: BaseException) -> None:
        self.enabled = False
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log.warning("compiling the moments kernel failed (%s: %s); using the eager reduction", type(exc).__name__, first[:200])


_KERNELS = _Kernels()


def _dispatch(name: str, fused: Callable[..., object], eager: Callable[..., object], x: torch.Tensor, compiled: bool | None, *args: object) -> object:
    """``fused(x, *args)`` compiled (forced by ``compiled``, else where ``kernel_wanted(x)``), ``eager(x, *args)`` otherwise
    or when compiling fails (then switched off for the process, with a warning)."""
    if compiled if compiled is not None else _KERNELS.wanted(x):
        try:
            return _KERNELS.get(name, fused)(x, *args)
        except Exception as exc:  # noqa: BLE001  (a compiler failure of any kind must not stop the run)
            _KERNELS.disable(exc)
    return eager(x, *args)


def compiled_kernels(enabled: bool | None = None) -> bool:
    """Whether the compiled kernels may be used in this process; ``enabled`` switches them on or off (tests, benchmarks)."""
    if enabled is not None:
        _KERNELS.enabled = enabled
    return _KERNELS.enabled


def kernel_wanted(x: torch.Tensor) -> bool:
    """Whether a map like ``x`` goes through the compiled kernels (by size and device, when compiling works)."""
    return _KERNELS.wanted(x)


def mean_and_square(
    x: torch.Tensor, *, last: bool = False, compiled: bool | None = None, shift: torch.Tensor | None = None
) -> Moments:
    """Per-image, per-channel mean and mean of squares over the positions of ``x``, in float32 (float64 stays float64).

    Args:
        x: ``[N, C, P]``, or ``[N, P, C]`` with ``last``; any float dtype, any strides.
        compiled: force the compiled kernel (True) or the eager ops (False); default: by size.
        shift: ``[N, C]`` values subtracted from every position first (the moments are of ``x - shift``);
            a shift near each row's mean keeps E[x^2] - E[x]^2 accurate in float32 (see ``row_shift``).

    Returns:
        Two ``[N, C]`` tensors, E[x] and E[x^2]; no autograd graph (see ``synth.losses`` for one).
    """
    return _dispatch("forward", _fused_forward, _eager_forward, x.detach(), compiled, last, shift)  # type: ignore[return-value]


def shifted_moments(x: torch.Tensor, *, last: bool = False, compiled: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``row_shift(x)`` and ``mean_and_square(x, shift=...)`` of it, the two in one compiled call where it pays.

    Returns the shift s and E[x - s], E[(x - s)^2], each ``[N, C]`` float32 (float64 stays float64).
    """
    return _dispatch("shifted", _shifted_forward, _eager_shifted, x.detach(), compiled, last)  # type: ignore[return-value]


def _shifted_forward(x: torch.Tensor, last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shift = row_shift(x, last=last)
    return (shift, *_fused_forward(x, last, shift))


def _eager_shifted(x: torch.Tensor, last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shift = row_shift(x, last=last)
    return (shift, *_eager_forward(x, last, shift))


def row_shift(x: torch.Tensor, *, last: bool = False, samples: int = 8) -> torch.Tensor:
    """Per image and channel, the mean of ``samples`` evenly spaced positions of ``x`` (``[N, C, P]`` or ``[N, P, C]``), in float32 (or float64).

    A cheap estimate of each row's mean (it reads ``samples`` of its P values): moments taken about
    it lose no digits to cancellation even where a channel's mean is large against its spread
    within an image, which about 1 % of the rows of a trained network's BatchNorm inputs are.
    """
    p = x.shape[1 if last else 2]
    step = max(1, p // samples)
    picked = x[:, ::step, :][:, :samples, :] if last else x[:, :, ::step][:, :, :samples]
    return picked.to(torch.promote_types(x.dtype, torch.float32)).mean(1 if last else 2)


def moments_backward(
    x: torch.Tensor,
    g_mean: torch.Tensor,
    g_sq: torch.Tensor,
    *,
    axis: int = 1,
    grad: torch.Tensor | None = None,
    compiled: bool | None = None,
) -> torch.Tensor:
    """The gradient with respect to ``x`` (channels on ``axis``) given those of E[x] and E[x^2] (``[N, C]`` each).

    With ``grad`` (the gradient reaching ``x`` by its other uses), returns their sum; compiled,
    that is one pass reading ``grad`` and ``x``.
    """
    return _dispatch("backward", _backward, _backward, x.detach(), compiled, g_mean, g_sq, axis % x.dim(), grad)  # type: ignore[return-value]
