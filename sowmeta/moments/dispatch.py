"""Which implementation computes a map's per-image moments: one table, one decision per map, said once per run.

Two contracts, one function each:

* ``central_moments(x, axis)``: per image and channel, the mean and M2 (the sum of squared
  deviations) over the positions, in float64, outside autograd: what collectors fold into
  per-class moments (``class_moments.py``).
* ``raw_moments(x, axis)``: per image and channel, E[x] and E[x^2] in float32, differentiable in
  ``x``: what the synthesis objective compares with a bundle's statistics.

``TABLE`` lists the implementations; the first that applies to a map computes it:

=========  ========================================================================  =======  ===
name       applies to                                                                central  raw
=========  ========================================================================  =======  ===
native     the input of an eval-mode BatchNorm on the CPU (float32, contiguous):      yes      yes
           the C kernel computes the layer's output and the moments in one read
           (``native.py``; ``recording.py`` hands it the layer's call)
columns    a feature with one position per channel ([N, C]): nothing to reduce        yes      yes
welford    a CUDA map: ``torch.var_mean``, one Welford pass, no host sync             yes      no
compiled   a map of ``COMPILE_MIN_ELEMENTS`` elements or more (by device), where      yes      yes
           ``torch.compile`` works: one read for the shift and both sums
eager      anything else: eager PyTorch ops (a sum and a norm, or a square)           yes      yes
=========  ========================================================================  =======  ===

The compiled and eager routes give the same numbers up to float32 rounding; a compiled kernel
that fails to build is switched off for the process with a warning (``reduce.py``). A run (one
collection, one synthesis) keeps a ``DispatchLog`` that says, once, at INFO level (``sowmeta -v``),
how many taps each implementation computed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch

from ..env import compile_enabled
from . import native, reduce

__all__ = [
    "Contract",
    "Implementation",
    "TABLE",
    "COMPILE_MIN_ELEMENTS",
    "CentralMoments",
    "DispatchLog",
    "choose",
    "native_applies",
    "central_moments",
    "raw_moments",
    "switched_off",
]

log = logging.getLogger(__name__)

Contract = Literal["central", "raw"]

# Maps smaller than this are reduced eagerly. CPU (4 MiB of float32): there the two eager reads hit
# the cache and cost about what the compiled call does, and a small model's short run would not
# earn back the seconds a compile takes. CUDA: the kernel saves a pass at any size worth a launch.
COMPILE_MIN_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 16}


@dataclass(frozen=True)
class Implementation:
    """One way to compute per-image moments, and the contracts it serves."""

    name: str
    what: str
    central: bool
    raw: bool


TABLE: tuple[Implementation, ...] = (
    Implementation("native", "the fused BatchNorm kernel", True, True),
    Implementation("columns", "one position per channel", True, True),
    Implementation("welford", "CUDA var_mean", True, False),
    Implementation("compiled", "a compiled one-pass reduction", True, True),
    Implementation("eager", "eager ops", True, True),
)
_OFF: set[str] = set()  # implementations the table skips (``switched_off``)


class CentralMoments(NamedTuple):
    """Per image and channel: the mean and M2 over ``positions`` positions, float64 ``[N, C]`` each."""

    mean: torch.Tensor
    m2: torch.Tensor
    positions: int


@contextmanager
def switched_off(*names: str) -> Iterator[None]:
    """For the block, the table skips the implementations ``names`` (``native``, ``compiled``): for benchmarks that
    compare routes in one process and tests that force one. The next row that applies computes instead."""
    unknown = [n for n in names if n not in ("native", "compiled")]
    if unknown:
        raise ValueError(f"only native and compiled can be switched off, not {unknown[0]!r}")
    before = set(_OFF)
    _OFF.update(names)
    try:
        yield
    finally:
        _OFF.clear()
        _OFF.update(before)


def _compiled_applies(x: torch.Tensor) -> bool:
    least = COMPILE_MIN_ELEMENTS.get(x.device.type)
    return (
        "compiled" not in _OFF
        and reduce.compiled_kernels()
        and least is not None
        and x.numel() >= least
        and not torch.compiler.is_compiling()
        and compile_enabled()
    )


def choose(x: torch.Tensor, contract: Contract, *, positions: int | None = None) -> str:
    """The implementation of ``TABLE`` that computes ``contract`` for map ``x`` (native is decided by ``native_applies``).

    ``positions``: the positions per (image, channel) row, when the caller has the rows' view.
    """
    one_position = positions == 1 if contract == "central" else x.dim() == 2
    if one_position:
        return "columns"
    if contract == "central" and x.is_cuda:
        return "welford"
    return "compiled" if _compiled_applies(x) else "eager"


def native_applies(
    x: torch.Tensor, contract: Contract, *, training: bool, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
) -> bool:
    """Whether the kernel computes a BatchNorm call on ``x`` and the moments of ``x`` (the table's first row).

    Eval mode with running statistics, a contiguous float32 CPU map with positions, the kernel
    built, not inside ``torch.compile``; collection outside autograd, synthesis inside it with the
    layer's own parameters frozen (no gradient is computed for them).
    """
    frozen = not any(t is not None and t.requires_grad for t in (weight, bias))
    autograd = torch.is_grad_enabled()
    return (
        "native" not in _OFF
        and not training
        and running_mean is not None
        and running_var is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() >= 3
        and x.numel() > 0
        and x.is_contiguous()
        and (not autograd if contract == "central" else autograd and frozen)
        and not torch.compiler.is_compiling()
        and native.available()
    )


@dataclass
class DispatchLog:
    """Which implementation computed each tap's moments in one run; said once, at INFO level (``sowmeta -v``)."""

    run: str  # what the run is, for the line: "collect", "synthesize"
    chosen: dict[str, str] = field(default_factory=dict)
    said: bool = False

    def note(self, tap: str, implementation: str) -> None:
        self.chosen.setdefault(tap, implementation)

    def say(self) -> None:
        """Log the count of taps per implementation, the first time this is called with something noted."""
        if self.said or not self.chosen:
            return
        self.said = True
        counts = Counter(self.chosen.values())
        parts = [f"{counts[i.name]} by {i.name} ({i.what})" for i in TABLE if counts[i.name]]
        log.info("per-image moments of %d taps (%s): %s", len(self.chosen), self.run, ", ".join(parts))


def _note(log_: DispatchLog | None, tap: str, implementation: str) -> None:
    if log_ is not None:
        log_.note(tap, implementation)


def central_moments(
    x: torch.Tensor, axis: int = 1, *, native_moments: native.NativeMoments | None = None, log: DispatchLog | None = None, tap: str = ""
) -> CentralMoments:
    """Mean and M2 over the positions of ``x`` (channels on ``axis``), per image and channel, in float64.

    ``native_moments``: the same already taken from ``x`` by the kernel (``recording.py``); only its
    ill-conditioned rows, if any, are then recomputed here. ``log``/``tap``: where the choice is noted.
    """
    x = x.detach()
    if x.dim() < 2:
        raise ValueError(f"a tapped feature needs a batch and a channel axis, got shape {tuple(x.shape)}")
    v, last = reduce.rows_view(x, axis)
    n, c, p = v.shape[0], v.shape[2 if last else 1], v.shape[1 if last else 2]
    if native_moments is not None:
        _note(log, tap, "native")
        mean, m2 = native_moments.mean, native_moments.m2
        if native_moments.ill:
            offset = mean - native_moments.shift.double()
            reduce.exact_rows(v, last, mean, m2, torch.nonzero((m2 * reduce.ILL_CONDITIONED < offset.square() * p).flatten()).flatten())
        return CentralMoments(mean, m2, p)
    how = choose(x, "central", positions=p)
    _note(log, tap, how)
    if how == "columns":  # N x C features: every image is one sample per channel
        return CentralMoments(v.reshape(n, c).double(), torch.zeros(n, c, dtype=torch.float64, device=v.device), 1)
    if how == "welford":  # one pass, exact enough and free of host syncs
        var, mean = torch.var_mean(v if v.dtype in (torch.float32, torch.float64) else v.float(), dim=1 if last else 2, correction=0)
        return CentralMoments(mean.double(), var.double() * p, p)
    mean, m2 = reduce.central_about_shift(v, last, compiled=how == "compiled")
    return CentralMoments(mean, m2, p)


def raw_moments(x: torch.Tensor, axis: int = 1, *, log: DispatchLog | None = None, tap: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """E[x] and E[x^2] over the positions of ``x`` (channels on ``axis``), per image and channel (B x C each), differentiable.

    Computed in float32 even under autocast; axis 1 (NCHW, [B, C]) and the last axis ([B, L, D]
    tokens, channels-last maps) are read in place, another axis is moved first. Reduced at once
    (inside a forward hook), so no feature map is kept beyond autograd's own needs.
    """
    how = choose(x, "raw")
    _note(log, tap, how)
    if how == "columns":
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()
        return x, x * x
    return reduce.differentiable_moments(x, axis % x.dim(), compiled=how == "compiled")

