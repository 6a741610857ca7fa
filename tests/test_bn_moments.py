"""The fused BatchNorm + moments kernel (``sowmeta.moments.native``, reached through ``recording.py``) against eager
BatchNorm and float64 moments computed another way."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from sowmeta.collectors import StatsRecorder, collect
from sowmeta.models.taps import Tap, resolve_taps
from sowmeta.moments import central_moments, fused_batchnorms
from sowmeta.moments import native as bn_moments
from sowmeta.moments.reduce import ILL_CONDITIONED

from conftest import randomize_bn, tiny_net, write_image_folder

needs_kernel = pytest.mark.skipif(not bn_moments.available(), reason="no C compiler or OpenMP runtime: the fused kernel is off here")


def bn_of(c: int, affine: bool = True, seed: int = 0) -> nn.BatchNorm2d:
    torch.manual_seed(seed)
    return randomize_bn(nn.BatchNorm2d(c, affine=affine), seed) if affine else _stats_only(nn.BatchNorm2d(c, affine=False), seed)


def _stats_only(bn: nn.BatchNorm2d, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
    bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    return bn.eval()


def spy_on(monkeypatch: pytest.MonkeyPatch, name: str) -> list[bool]:
    """Wrap the operator ``native.<name>`` (``bn_moments``, ``bn_sums``) so that every call that ran the kernel is recorded."""
    calls: list[bool] = []
    real = getattr(bn_moments, name)

    def spy(*args):  # noqa: ANN002, ANN202
        calls.append(True)
        return real(*args)

    monkeypatch.setattr(bn_moments, name, spy)
    return calls


def fused_call(bn: nn.Module, x: torch.Tensor, contract: str = "central") -> tuple[torch.Tensor, object]:
    """``bn(x)`` with its input tapped as a collector (``central``) or the engine (``raw``) taps it, and the kernel's
    moments of ``x`` (None where the call was not fused)."""
    taken: list[object] = []
    with fused_batchnorms(bn, [Tap("x", "", "in", "bn-input")], lambda tap, x, moments: taken.append(moments), contract=contract):
        y = bn(x)
    return y, taken[0] if taken else None


def batchnorm_moments(bn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, bn_moments.NativeMoments] | None:
    y, rows = fused_call(bn, x, "central")
    return None if rows is None else (y, rows)  # type: ignore[return-value]


def batchnorm_sums(bn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None:
    y, sums = fused_call(bn, x, "raw")
    return None if sums is None else (y, sums)  # type: ignore[return-value]


def reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel: mean and sum of squared deviations, in float64, by var_mean."""
    d = x.double().flatten(2)
    var, mean = torch.var_mean(d, dim=2, correction=0)
    return mean, var * d.shape[2]


@needs_kernel
@pytest.mark.parametrize("shape", [(5, 3, 7, 5), (4, 6, 2, 3), (2, 4, 1, 1), (3, 2, 9)])
@pytest.mark.parametrize("affine", [True, False])
def test_output_is_batchnorm_and_moments_are_float64_exact(shape, affine):
    """Odd position counts, fewer than the 8 sampled positions, one position, BatchNorm1d-shaped maps."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g) * 3 + 2
    bn = bn_of(shape[1], affine) if len(shape) == 4 else _stats_only(nn.BatchNorm1d(shape[1]), 1)
    with torch.no_grad():
        y, rows = batchnorm_moments(bn, x)
        torch.testing.assert_close(y, bn(x), rtol=1e-5, atol=1e-6)
    mean, m2 = reference(x)
    assert rows.mean.dtype == torch.float64 and rows.ill == 0
    torch.testing.assert_close(rows.mean, mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rows.m2, m2, rtol=1e-5, atol=1e-5)
    p = x[0, 0].numel()
    picked = x.flatten(2)[:, :, :: max(1, p // 8)][:, :, :8].mean(2)
    torch.testing.assert_close(rows.shift, picked)


@needs_kernel
def test_ill_conditioned_rows_are_counted_and_recomputed_exactly():
    """Rows whose sampled positions miss their mass: the kernel counts them, central_moments makes them exact."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(4, 3, 32, 32, generator=g) * 0.01 + 1000.0
    x.view(4, 3, -1)[:, :, ::128] = 0.0  # every sampled position
    x[0, 0] = torch.randn(32, 32, generator=g)  # one well-conditioned row
    with torch.no_grad():
        _, rows = batchnorm_moments(bn_of(3), x)
    mean, m2 = reference(x)
    offset = rows.mean - rows.shift.double()
    assert rows.ill == int((rows.m2 * ILL_CONDITIONED < offset.square() * 1024).sum()) == 11
    fixed_mean, fixed_m2, p = central_moments(x, 1, native_moments=rows)
    assert p == 1024
    ill = torch.ones(4, 3, dtype=torch.bool)
    ill[0, 0] = False
    torch.testing.assert_close(fixed_mean[ill], mean[ill], rtol=1e-12, atol=0)
    torch.testing.assert_close(fixed_m2[ill], m2[ill], rtol=1e-9, atol=0)
    torch.testing.assert_close(fixed_mean[0, 0], mean[0, 0], rtol=1e-5, atol=1e-6)  # float32 sums, as everywhere
    torch.testing.assert_close(fixed_m2[0, 0], m2[0, 0], rtol=1e-5, atol=0)


@needs_kernel
def test_nan_and_infinity_propagate():
    x = torch.randn(2, 2, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    x[1, 1, 2, 2] = float("inf")
    with torch.no_grad():
        y, rows = batchnorm_moments(bn_of(2), x)
    assert torch.isnan(rows.mean[0, 0]) and torch.isnan(y[0, 0, 1, 1])
    assert not torch.isfinite(rows.mean[1, 1]) and torch.isfinite(rows.mean[0, 1]) and torch.isfinite(rows.mean[1, 0])


class ShiftedInput(nn.BatchNorm2d):
    """Normalizes something other than its input: its input's moments cannot come from its BatchNorm call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x + 1)


class OwnForward(nn.BatchNorm2d):
    """Its own forward around the BatchNorm call on its input: the call is fused, the rest runs as written."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2 + 1


@needs_kernel
def test_what_is_not_fused():
    """Training mode, no running statistics, a layer normalizing something else, autograd, float64, channels-last: None."""
    x = torch.randn(2, 3, 4, 4)
    bn = bn_of(3)
    with torch.no_grad():
        assert batchnorm_moments(bn, x) is not None
        assert batchnorm_moments(bn.train(), x) is None
        bn.eval()
        assert batchnorm_moments(nn.BatchNorm2d(3, track_running_stats=False).eval(), x) is None
        assert batchnorm_moments(ShiftedInput(3).eval(), x) is None
        assert batchnorm_moments(bn_of(3).double(), x.double()) is None
        assert batchnorm_moments(bn, x.to(memory_format=torch.channels_last)) is None
    assert batchnorm_moments(bn, x) is None  # grad mode on


@needs_kernel
def test_a_layer_with_its_own_forward_keeps_it():
    """Only the F.batch_norm call is the kernel's: what the layer does around it runs as written."""
    x = torch.randn(2, 3, 5, 4)
    bn = randomize_bn(OwnForward(3), 3).eval()
    with torch.no_grad():
        y, rows = batchnorm_moments(bn, x)
        torch.testing.assert_close(y, bn(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows.mean, reference(x)[0], rtol=1e-6, atol=1e-6)


@needs_kernel
def test_collect_takes_the_fused_route_and_matches_the_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same bundle through the kernel and through the hooks (SOWMETA_COMPILE=0), and the kernel really ran."""
    from sowmeta.models import LoadedModel
    from sowmeta.models.preprocess import Preprocessing

    folder = write_image_folder(tmp_path / "data", classes=4, per_class=6, size=12)
    loaded = LoadedModel(tiny_net(4), "conftest:tiny_net", None, 4, None, Preprocessing(crop=12))
    calls = spy_on(monkeypatch, "bn_moments")
    fused, _ = collect(loaded, folder, batch_size=5)
    assert len(calls) == 2 * 5  # two BatchNorm taps, five batches
    monkeypatch.setenv("SOWMETA_COMPILE", "0")
    calls.clear()
    hooked, _ = collect(loaded, folder, batch_size=5)
    assert calls == []  # nothing patched: the hooks recorded
    for tap, s in fused.stats.items():
        torch.testing.assert_close(s.mean, hooked.stats[tap].mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(s.var, hooked.stats[tap].var, rtol=1e-5, atol=1e-7)


@needs_kernel
def test_hooks_and_modes_are_gone_even_on_error_and_outputs_unchanged():
    """The model's output is unchanged while recording; afterwards no hook and no function mode is left, also after an
    exception inside the block or inside a tapped layer's forward."""
    from torch.overrides import _get_current_function_mode_stack

    model = tiny_net(4)
    x = torch.randn(6, 3, 12, 12)
    with torch.no_grad():
        want = model(x)
    taps = resolve_taps(model)
    recorder = StatsRecorder(model, taps, 4)
    with torch.no_grad(), recorder.hooks():
        recorder.set_labels(torch.tensor([0, 1, 2, 3, 0, 1]))
        got = model(x)
    recorder.set_labels(None)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    def clean() -> bool:
        return not _get_current_function_mode_stack() and not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())

    assert clean()
    with pytest.raises(RuntimeError, match="boom"), fused_batchnorms(model, taps, lambda *a: None, contract="central") as names:
        assert names == {"bn1", "bn2"}
        raise RuntimeError("boom")
    assert clean()
    with pytest.raises(RuntimeError), torch.no_grad(), fused_batchnorms(model, taps, lambda *a: None, contract="central"):
        model(torch.randn(2, 5, 12, 12))  # the wrong channel count: the first layer fails
    assert clean()


def test_no_compiler_means_the_hooks(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """A missing compiler and a failing one: no kernel, a warning for the failure, and collecting still works."""
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert bn_moments._Library().get() is None
    monkeypatch.setenv("CC", "false")
    with caplog.at_level(logging.WARNING, logger="sowmeta.moments.native"):
        assert bn_moments._Library().get() is None
    assert "unavailable" in caplog.text
    broken = bn_moments._Library()
    broken._tried = True  # as after a failed build: collect through the hooks
    monkeypatch.setattr(bn_moments, "_LIBRARY", broken)
    model = tiny_net(4)
    recorder = StatsRecorder(model, resolve_taps(model), 4)
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad(), recorder.hooks():
        recorder.set_labels(torch.tensor([0, 1, 0, 1]))
        model(x)
    recorder.set_labels(None)
    assert recorder.moments["bn1"].images.tolist() == [2, 2, 0, 0]


@needs_kernel
def test_the_build_is_cached_by_source_and_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SOWMETA_CACHE", str(tmp_path / "cache"))
    runs = []
    real = bn_moments.subprocess.run

    def counting(cmd, **kw):
        runs.append(cmd[1] if len(cmd) > 1 else cmd[0])
        return real(cmd, **kw)

    monkeypatch.setattr(bn_moments.subprocess, "run", counting)
    assert bn_moments._Library().get() is not None
    built = list((tmp_path / "cache" / "native").glob("bn_moments-*.so"))
    assert len(built) == 1 and runs.count("--version") == 1 and len(runs) == 2
    assert bn_moments._Library().get() is not None  # found in the cache: only the version query runs
    assert len(runs) == 3 and not list((tmp_path / "cache" / "native").glob(".build-*"))


@needs_kernel
@pytest.mark.parametrize("use", ["all", "moments only", "output only"])
def test_synthesis_gradient_equals_float64_autograd(use):
    """d/dx of a loss on the BatchNorm's output and on E[x], E[x^2] against autograd of the plain formulas in float64;
    gradients of outputs the loss does not use arrive as zeros."""
    g = torch.Generator().manual_seed(4)
    bn = bn_of(5)
    for p in bn.parameters():
        p.requires_grad_(False)
    x = (torch.randn(3, 5, 7, 6, generator=g) * 2 + 1).requires_grad_(True)
    wy, wm, wq = (torch.randn(*s, generator=g) for s in ((3, 5, 7, 6), (3, 5), (3, 5)))

    def loss(y, mean, sq):
        parts = {"all": (True, True), "moments only": (False, True), "output only": (True, False)}[use]
        out = (y * wy).sum() if parts[0] else 0.0
        return out + ((mean * wm).sum() + (sq * wq).sum() if parts[1] else 0.0)

    y, (mean, sq) = batchnorm_sums(bn, x)
    loss(y, mean, sq).backward()
    x64 = x.detach().double().requires_grad_(True)
    bn64 = bn_of(5).double()
    y64 = bn64(x64)
    flat = x64.flatten(2)
    loss(y64, flat.mean(2), flat.square().mean(2)).backward()
    torch.testing.assert_close(y.detach().double(), y64.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mean.detach().double(), flat.mean(2).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)


@needs_kernel
def test_synthesis_sums_need_a_frozen_layer_and_autograd():
    bn = bn_of(3)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert batchnorm_sums(bn, x) is None  # its parameters would need gradients
    for p in bn.parameters():
        p.requires_grad_(False)
    assert batchnorm_sums(bn, x) is not None
    with torch.no_grad():
        assert batchnorm_sums(bn, x) is None


@needs_kernel
def test_engine_takes_the_fused_route_and_matches_the_hooks(monkeypatch: pytest.MonkeyPatch):
    """A few iterations of the engine through the kernel and through the hooks (SOWMETA_COMPILE=0): the same images."""
    from sowmeta.models.preprocess import Preprocessing
    from sowmeta.synth.config import SynthConfig
    from sowmeta.synth.engine import Inverter, TapTarget

    model = tiny_net(4)
    taps = resolve_taps(model, "bn-inputs")
    g = torch.Generator().manual_seed(5)
    targets = [TapTarget(t, torch.randn(2, c, generator=g), torch.rand(2, c, generator=g) + 0.5) for t, c in zip(taps, (6, 12))]
    init = torch.rand(4, 3, 12, 12, generator=g)
    calls = spy_on(monkeypatch, "bn_sums")

    def run() -> torch.Tensor:
        inv = Inverter(model, targets, Preprocessing(crop=12), SynthConfig(batch_size=4, iterations=5, jitter=0, flip=False))
        return inv.run(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 1]), init, seed=0).images

    fused = run()
    assert len(calls) == 2 * 5  # the final verdict runs without autograd, so through the hooks
    monkeypatch.setenv("SOWMETA_COMPILE", "0")
    calls.clear()
    hooked = run()
    assert calls == []
    assert (fused - hooked).abs().max() < 1e-4  # images in [0, 1]; float32 rounding only
    assert (fused - init).abs().max() > 1e-2  # and they did move


@needs_kernel
def test_a_damaged_cached_build_is_rebuilt_and_an_unusable_cache_is_a_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """In fresh processes (a library once loaded stays mapped under its name): build, damage the file, load again."""
    import subprocess
    import sys

    env = {**os.environ, "SOWMETA_CACHE": str(tmp_path / "cache")}
    probe = [sys.executable, "-c", "from sowmeta.moments import native; print(native.available())"]
    assert subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip() == "True"
    (built,) = (tmp_path / "cache" / "native").glob("bn_moments-*.so")
    built.write_bytes(b"not a shared library")  # as a copy cut short would leave it
    assert subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip() == "True"
    assert built.read_bytes()[:4] == b"\x7fELF"
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("SOWMETA_CACHE", str(tmp_path / "file"))  # the cache is a file: nothing can be built there
    with caplog.at_level(logging.WARNING, logger="sowmeta.moments.native"):
        assert bn_moments._Library().get() is None
    assert "unavailable" in caplog.text and "hooks" in caplog.text


def _bn_act(c: int, seed: int = 0) -> nn.Module:
    """timm's BatchNormAct2d (BatchNorm, then dropout and an activation in one module), eval mode, random statistics."""
    norm_act = pytest.importorskip("timm.layers.norm_act")
    torch.manual_seed(seed)
    return randomize_bn(norm_act.BatchNormAct2d(c, act_layer=nn.SiLU), seed).eval()


@needs_kernel
def test_timm_batchnorm_act_is_fused_with_its_activation():
    """Output equal to the module's own forward (normalization, then SiLU); moments float64-exact; a subclass that
    normalizes another tensor than its input is not fused."""
    x = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(2)) * 2 + 1
    bn = _bn_act(4)
    with torch.no_grad():
        y, rows = batchnorm_moments(bn, x)
        torch.testing.assert_close(y, bn(x), rtol=1e-5, atol=1e-6)
        assert float((y - bn_of(4)(x)).abs().max()) > 0.1  # the activation was applied
    mean, m2 = reference(x)
    torch.testing.assert_close(rows.mean, mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rows.m2, m2, rtol=1e-5, atol=1e-5)

    class Custom(type(bn)):
        def forward(self, x):  # noqa: ANN001, ANN202
            return super().forward(x.flip(-1)) * 2

    with torch.no_grad():
        assert batchnorm_moments(Custom(4).eval(), x) is None  # normalizes another tensor than its input


@needs_kernel
def test_timm_batchnorm_act_gradient_equals_float64_autograd():
    g = torch.Generator().manual_seed(5)
    bn = _bn_act(3)
    for p in bn.parameters():
        p.requires_grad_(False)
    x = (torch.randn(2, 3, 5, 4, generator=g) * 2).requires_grad_(True)
    wy, wq = torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, generator=g)
    y, (mean, sq) = batchnorm_sums(bn, x)
    ((y * wy).sum() + (sq * wq).sum()).backward()
    x64 = x.detach().double().requires_grad_(True)
    y64 = bn.double()(x64)
    ((y64 * wy).sum() + (x64.flatten(2).square().mean(2) * wq).sum()).backward()
    torch.testing.assert_close(y.detach().double(), y64.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)


@needs_kernel
def test_collect_fuses_timm_batchnorm_act_taps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A network built from BatchNormAct2d: the same bundle through the kernel as through the hooks, and the kernel ran."""
    from sowmeta.models import LoadedModel
    from sowmeta.models.preprocess import Preprocessing

    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), _bn_act(6, 1), nn.Conv2d(6, 5, 3, stride=2), _bn_act(5, 2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    folder = write_image_folder(tmp_path / "data", classes=3, per_class=5, size=12)
    loaded = LoadedModel(net, "custom", None, 3, None, Preprocessing(crop=12))
    calls = spy_on(monkeypatch, "bn_moments")
    fused, _ = collect(loaded, folder, batch_size=4, taps="bn-inputs")
    assert len(fused.stats) == 2 and calls
    monkeypatch.setenv("SOWMETA_COMPILE", "0")
    calls.clear()
    hooked, _ = collect(loaded, folder, batch_size=4, taps="bn-inputs")
    assert calls == []
    for tap, s in fused.stats.items():
        torch.testing.assert_close(s.mean, hooked.stats[tap].mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(s.var, hooked.stats[tap].var, rtol=1e-5, atol=1e-7)
