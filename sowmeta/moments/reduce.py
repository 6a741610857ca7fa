"""Per-image, per-channel E[x] and E[x^2] of a feature map in one pass (a compiled kernel, eager fallback).

Both the collector and the synthesis engine reduce every tapped map to these two moments. Eager
PyTorch needs two reads of the map for them (a sum, then a norm or a square), and a third when
the map is bf16 (the upcast); a ``torch.compile``d reduction reads each element once and fuses
the upcast. The backward, d/dx = (g_mean + 2 x g_sq) / n, is one multiply-add per element, and
compiled it can also add the gradient that reaches the map from its own layer in the same pass.

Compiling costs seconds once per process, so it is used only for maps large enough to pay it back
(``dispatch.py`` decides, by size); where compiling is unavailable (no C++ compiler,
``SOWMETA_COMPILE=0``) or fails, the eager ops give the same numbers up to float32 rounding, and the
run goes on. The two contracts built from these (``dispatch.central_moments``, ``dispatch.raw_moments``)
end here too: ``central_about_shift`` (float64 mean and M2, exact where float32 would lose digits)
and ``differentiable_moments`` (E[x] and E[x^2] with their one-pass backward).

Layouts of the forward: ``[N, C, P]`` (channels first: NCHW maps flattened, ``last=False``) or
``[N, P, C]`` (channels last: token sequences, channels-last maps, ``last=True``), read in place.
The backward works on the map in its own shape, channels on ``axis``, any memory format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch


__all__ = [
    "ILL_CONDITIONED",
    "rows_view",
    "mean_and_square",
    "shifted_moments",
    "row_shift",
    "moments_backward",
    "compiled_kernels",
    "central_about_shift",
    "exact_rows",
    "differentiable_moments",
]

log = logging.getLogger(__name__)

# Rows with (mean - shift)^2 > ILL_CONDITIONED * variance are recomputed exactly: the float32 route's
# relative error in the variance grows like 4e-7 * (1 + (mean - shift)^2 / variance), so it stays below ~5e-6.
ILL_CONDITIONED = 10.0
# Elements per float64 chunk when recomputing rows exactly: bounds the temporary copy.
_CHUNK_ELEMENTS = 1 << 22

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

    def disable(self, exc: BaseException) -> None:
        self.enabled = False
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log.warning("compiling the moments kernel failed (%s: %s); using the eager reduction", type(exc).__name__, first[:200])


_KERNELS = _Kernels()


def _run(name: str, fused: Callable[..., object], eager: Callable[..., object], x: torch.Tensor, compiled: bool, *args: object) -> object:
    """``fused(x, *args)`` compiled with ``compiled`` (while compiling works), else ``eager(x, *args)``; a compile that
    fails switches the compiled kernels off for the process, with a warning."""
    if compiled and _KERNELS.enabled:
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


def mean_and_square(
    x: torch.Tensor, *, last: bool = False, compiled: bool = False, shift: torch.Tensor | None = None
) -> Moments:
    """Per-image, per-channel mean and mean of squares over the positions of ``x``, in float32 (float64 stays float64).

    Args:
        x: ``[N, C, P]``, or ``[N, P, C]`` with ``last``; any float dtype, any strides.
        compiled: the compiled kernel (True) or the eager ops (False, the default).
        shift: ``[N, C]`` values subtracted from every position first (the moments are of ``x - shift``);
            a shift near each row's mean keeps E[x^2] - E[x]^2 accurate in float32 (see ``row_shift``).

    Returns:
        Two ``[N, C]`` tensors, E[x] and E[x^2]; no autograd graph (``differentiable_moments`` has one).
    """
    return _run("forward", _fused_forward, _eager_forward, x.detach(), compiled, last, shift)  # type: ignore[return-value]


def shifted_moments(x: torch.Tensor, *, last: bool = False, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``row_shift(x)`` and ``mean_and_square(x, shift=...)`` of it, the two in one compiled call where it pays.

    Returns the shift s and E[x - s], E[(x - s)^2], each ``[N, C]`` float32 (float64 stays float64).
    """
    return _run("shifted", _shifted_forward, _eager_shifted, x.detach(), compiled, last)  # type: ignore[return-value]


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
    compiled: bool = False,
) -> torch.Tensor:
    """The gradient with respect to ``x`` (channels on ``axis``) given those of E[x] and E[x^2] (``[N, C]`` each).

    With ``grad`` (the gradient reaching ``x`` by its other uses), returns their sum; compiled,
    that is one pass reading ``grad`` and ``x``.
    """
    return _run("backward", _backward, _backward, x.detach(), compiled, g_mean, g_sq, axis % x.dim(), grad)  # type: ignore[return-value]


def central_about_shift(v: torch.Tensor, last: bool, *, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and M2 per row of ``v`` ([N, C, P], or [N, P, C] with ``last``) in float64: float32 sums about each row's
    ``row_shift`` (one read), and the rows that would still lose digits (``ILL_CONDITIONED``) recomputed exactly."""
    p = v.shape[1 if last else 2]
    shift, mean32, sq32 = shifted_moments(v, last=last, compiled=compiled)
    offset = mean32.double()  # the mean's distance from the shift
    m2 = (sq32.double() - offset.square()) * p
    ill = torch.nonzero((m2 * ILL_CONDITIONED < offset.square() * p).flatten()).flatten()
    mean = offset.add_(shift.double())
    exact_rows(v, last, mean, m2, ill)
    return mean, m2.clamp_min_(0)


def exact_rows(v: torch.Tensor, last: bool, mean: torch.Tensor, m2: torch.Tensor, rows: torch.Tensor) -> None:
    """Recompute the flat (image * C + channel) ``rows`` of ``mean`` and ``m2`` exactly in float64, in place."""
    if not rows.numel():
        return
    c, p = mean.shape[1], v.shape[1 if last else 2]
    flat_mean, flat_m2 = mean.view(-1), m2.view(-1)
    step = max(1, _CHUNK_ELEMENTS // p)
    for start in range(0, rows.numel(), step):
        idx = rows[start : start + step]
        image, channel = idx // c, idx % c
        exact = (v[image, :, channel] if last else v[image, channel]).double()
        mu = exact.mean(dim=1, keepdim=True)
        flat_mean[idx] = mu.squeeze(1)
        flat_m2[idx] = (exact - mu).square().sum(dim=1)


class _PendingGrad:
    """The gradients of a map's moments, held until the map's own gradient is complete, then added to it in one pass."""

    __slots__ = ("grads",)

    def __init__(self) -> None:
        self.grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None

    def add_to(self, grad: torch.Tensor | None) -> torch.Tensor | None:
        """The tensor hook on the map: its gradient plus that of its moments."""
        pending, self.grads = self.grads, None
        if pending is None:
            return grad
        x, g_mean, g_sq, axis = pending
        if grad is None:  # nothing else of the loss depends on the map (a hook cannot turn None into a gradient)
            torch.autograd.backward(x, moments_backward(x, g_mean, g_sq, axis=axis, compiled=True), retain_graph=True)
            return None
        return moments_backward(x, g_mean, g_sq, axis=axis, grad=grad, compiled=True)


class _Moments(torch.autograd.Function):
    """Per-image, per-channel E[x] and E[x^2] over positions, in float32: one pass forward, one pass backward.

    The backward is d/dx = (g_mean + 2 x g_sq) / n, one multiply-add per element; with ``pending``
    (compiled kernels) it is not returned but added, by a hook on ``x``, to the gradient that reaches
    ``x`` through its layer, so the map is read once more instead of its two gradients being written
    and summed. ``x`` is saved as it is (bf16 under autocast), and the tapped layer keeps it for its
    own backward anyway, so saving it costs nothing.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, axis: int, pending: _PendingGrad | None, compiled: bool) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.axis, ctx.pending, ctx.compiled = axis, pending, compiled  # type: ignore[attr-defined]
        rows, last = rows_view(x, axis)
        return mean_and_square(rows, last=last, compiled=compiled)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g_mean: torch.Tensor, g_sq: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        axis, pending = ctx.axis, ctx.pending  # type: ignore[attr-defined]
        if pending is not None:
            pending.grads = (x, g_mean, g_sq, axis)
            return None, None, None, None
        return moments_backward(x, g_mean, g_sq, axis=axis, compiled=ctx.compiled), None, None, None  # type: ignore[attr-defined]


def differentiable_moments(x: torch.Tensor, axis: int, *, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """E[x] and E[x^2] over the positions of ``x`` (channels on ``axis``), in the autograd graph; compiled, the backward
    is added to the gradient ``x`` receives from its layer in the same pass."""
    if compiled and x.requires_grad and torch.is_grad_enabled():
        pending = _PendingGrad()
        x.register_hook(pending.add_to)
        return _Moments.apply(x, axis, pending, True)
    return _Moments.apply(x, axis, None, compiled)
