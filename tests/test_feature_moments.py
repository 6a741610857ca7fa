"""The one-pass per-image moments (``sowmeta.moments.reduce``: compiled kernel and eager fallback) against float64 references.

The reference is written independently: the map in float64, moved to [N, C, P] with ``permute``,
``mean`` over positions, and autograd of that plain formula for the gradients. Float32 kernels
agree to float32 rounding (sums over a few thousand positions: ~1e-6 relative).
"""

from __future__ import annotations

import logging

import pytest
import torch

from sowmeta.moments import ClassMoments, dispatch, raw_moments
from sowmeta.moments import reduce as feature_moments
from sowmeta.moments.reduce import compiled_kernels, mean_and_square

# (shape, channel axis): NCHW maps, token sequences [N, L, D], and a map with its channels on axis 2
CASES = [((3, 5, 7, 9), 1), ((4, 33, 6), -1), ((2, 4, 5, 3), 2)]


def reference(x: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """E[x] and E[x^2] per image and channel in float64, channels moved to axis 1 by permute."""
    axis = axis % x.dim()
    rest = [d for d in range(1, x.dim()) if d != axis]
    v = x.double().permute(0, axis, *rest).reshape(x.shape[0], x.shape[axis], -1)
    return v.mean(dim=2), (v * v).mean(dim=2)


def check_values_and_gradients(x: torch.Tensor, axis: int) -> None:
    """Values, and gradients through a map that the loss also uses otherwise (the usual case) or only through its moments."""
    g = torch.Generator().manual_seed(1)
    shape = reference(x, axis)[0].shape
    w_mean, w_sq = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)
    w_other = torch.randn(x.shape, generator=g, dtype=torch.float64)
    for other_use in (True, False):
        leaf64 = x.detach().double().requires_grad_(True)
        map64 = leaf64 * 2  # the tapped map is produced by an op, as a layer's output is
        mean_ref, sq_ref = reference(map64, axis)
        loss = (mean_ref * w_mean).sum() + (sq_ref * w_sq).sum() + ((map64 * w_other).sum() if other_use else 0)
        loss.backward()
        leaf = x.detach().clone().requires_grad_(True)
        tapped = leaf * 2
        mean, sq = raw_moments(tapped, axis)
        assert mean.dtype == torch.float32 and mean.shape == mean_ref.shape
        torch.testing.assert_close(mean.double(), mean_ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sq.double(), sq_ref.detach(), rtol=1e-5, atol=1e-6)
        loss = (mean * w_mean.float()).sum() + (sq * w_sq.float()).sum() + ((tapped * w_other.float()).sum() if other_use else 0)
        loss.backward()
        torch.testing.assert_close(leaf.grad.double(), leaf64.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,axis", CASES)
def test_eager_moments_and_gradients_match_float64(shape, axis, monkeypatch):
    monkeypatch.setenv("SOWMETA_COMPILE", "0")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3 + 1
    check_values_and_gradients(x, axis)


def test_channels_last_map_is_read_in_place_with_the_same_result(monkeypatch):
    monkeypatch.setenv("SOWMETA_COMPILE", "0")
    x = torch.randn(3, 6, 5, 4, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=torch.channels_last)
    check_values_and_gradients(x, 1)
    a, b = ClassMoments.zeros(2, 6), ClassMoments.zeros(2, 6)
    y = torch.tensor([0, 1, 0])
    a.update(x, y)
    b.update(x.contiguous(), y)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-5, atol=1e-7)  # float32 sums in another order
    torch.testing.assert_close(a.m2, b.m2, rtol=1e-5, atol=1e-7)


def test_a_failing_compiler_falls_back_to_the_eager_reduction(monkeypatch, caplog):
    """A compiler that cannot build (no C++ compiler) must not stop a run: a warning, then the same numbers."""

    def broken(*_args, **_kwargs):
        def kernel(*_a, **_k):
            raise RuntimeError("no working C++ compiler found")

        return kernel

    monkeypatch.setattr(feature_moments._KERNELS, "enabled", True)
    monkeypatch.setattr(feature_moments._KERNELS, "_compiled", {})
    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(dispatch, "COMPILE_MIN_ELEMENTS", {"cpu": 0, "cuda": 0})
    monkeypatch.delenv("SOWMETA_COMPILE", raising=False)
    x = torch.randn(2, 3, 10, generator=torch.Generator().manual_seed(3))
    with caplog.at_level(logging.WARNING, logger="sowmeta.moments.reduce"):
        check_values_and_gradients(x, 1)
    assert "using the eager reduction" in caplog.text
    assert compiled_kernels() is False


def test_compiling_can_be_switched_off(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda *a, **k: calls.append(a) or (lambda *_: None))
    monkeypatch.setattr(feature_moments._KERNELS, "_compiled", {})
    monkeypatch.setattr(dispatch, "COMPILE_MIN_ELEMENTS", {"cpu": 0, "cuda": 0})
    monkeypatch.setenv("SOWMETA_COMPILE", "0")
    mean, _ = raw_moments(torch.ones(2, 3, 4))
    assert calls == [] and mean.tolist() == [[1.0] * 3] * 2


@pytest.fixture
def compiled(monkeypatch):
    """Every map through the compiled kernels; skips (with the reason) where this machine cannot compile."""
    monkeypatch.setattr(dispatch, "COMPILE_MIN_ELEMENTS", {"cpu": 0, "cuda": 0})
    monkeypatch.delenv("SOWMETA_COMPILE", raising=False)
    monkeypatch.setattr(feature_moments._KERNELS, "enabled", True)
    try:
        mean_and_square(torch.randn(2, 3, 5), compiled=True)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"torch.compile does not work here ({type(exc).__name__})")
    if not compiled_kernels():
        pytest.skip("torch.compile does not work here (the kernel fell back to eager)")
    yield
    assert compiled_kernels(), "a compiled kernel failed and fell back during the test"


@pytest.mark.slow
@pytest.mark.parametrize("shape,axis", CASES)
def test_compiled_moments_and_gradients_match_float64(shape, axis, compiled):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3 + 1
    check_values_and_gradients(x, axis)


@pytest.mark.slow
def test_compiled_moments_of_half_precision_maps_upcast_inside(compiled):
    x = torch.randn(4, 8, 300, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    mean, sq = mean_and_square(x, compiled=True)
    mean_ref, sq_ref = reference(x, 1)
    assert mean.dtype == torch.float32
    torch.testing.assert_close(mean.double(), mean_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sq.double(), sq_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_collection_through_the_compiled_kernel_matches_float64(compiled):
    """ClassMoments fed through the compiled kernel: the tests/test_stats.py float64 reference, both layouts."""
    from test_stats import reference as class_reference

    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 7, 6, 6, generator=g) * 2 + 0.5
    y = torch.randint(0, 3, (40,), generator=g)
    first, last = ClassMoments.zeros(3, 7), ClassMoments.zeros(3, 7)
    for i in range(0, 40, 16):
        first.update(x[i : i + 16], y[i : i + 16])
        last.update(x[i : i + 16].flatten(2).transpose(1, 2), y[i : i + 16], axis=-1)
    mean_ref, var_ref = class_reference(x, y, 3)
    for m in (first, last):
        torch.testing.assert_close(m.mean, mean_ref, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(m.var(), var_ref, rtol=5e-6, atol=1e-7)


def check_shifted(compiled_flag: bool) -> None:
    """Moments about a per-row shift equal float64 moments of x - shift, in both layouts."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 5, 70, generator=g) * 0.01 + 500.0  # far from zero: the unshifted float32 route would cancel
    shift = feature_moments.row_shift(x)
    assert shift.shape == (3, 5) and torch.all((shift - 500.0).abs() < 0.1)
    d = x.double() - shift.double().unsqueeze(2)
    for v, last in ((x, False), (x.transpose(1, 2), True)):
        s = feature_moments.row_shift(v, last=last)
        torch.testing.assert_close(s, shift, rtol=0, atol=0)
        mean, sq = mean_and_square(v, last=last, shift=s, compiled=compiled_flag)
        torch.testing.assert_close(mean.double(), d.mean(2), rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(sq.double(), (d * d).mean(2), rtol=1e-5, atol=1e-12)
        s2, mean2, sq2 = feature_moments.shifted_moments(v, last=last, compiled=compiled_flag)  # the same in one call
        torch.testing.assert_close(s2, shift, rtol=0, atol=1e-4)
        torch.testing.assert_close(mean2.double() + s2.double(), x.double().mean(2), rtol=1e-9, atol=1e-6)
        torch.testing.assert_close(sq2.double() - mean2.double().square(), d.var(2, unbiased=False), rtol=1e-3, atol=1e-12)


def test_eager_moments_about_a_shift_match_float64(monkeypatch):
    monkeypatch.setenv("SOWMETA_COMPILE", "0")
    check_shifted(False)


@pytest.mark.slow
def test_compiled_moments_about_a_shift_match_float64(compiled):
    check_shifted(True)
