"""Every term of the synthesis objective against an independent computation (float64, loops, numpy)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_net

from sowmeta.errors import ConfigError
from sowmeta.synth import losses
from sowmeta.synth.augment import augment
from sowmeta.synth.config import SynthConfig
from sowmeta.synth.engine import Inverter, TapTarget, tap_weights
from sowmeta.moments import raw_moments
from sowmeta.synth.losses import Segments, eq7_distance, gaussian_kl, group_moments, l2_prior, total_variation
from sowmeta.models.preprocess import Preprocessing
from sowmeta.models.taps import Tap, resolve_taps, tap_hooks


def test_total_variation_matches_loops():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    a = x.numpy()
    sums = [0.0, 0.0, 0.0, 0.0]
    for n in range(2):
        for c in range(3):
            for i in range(5):
                for j in range(6):
                    if j + 1 < 6:
                        sums[0] += (a[n, c, i, j] - a[n, c, i, j + 1]) ** 2
                    if i + 1 < 5:
                        sums[1] += (a[n, c, i, j] - a[n, c, i + 1, j]) ** 2
                    if i + 1 < 5 and j + 1 < 6:
                        sums[2] += (a[n, c, i + 1, j] - a[n, c, i, j + 1]) ** 2
                        sums[3] += (a[n, c, i, j] - a[n, c, i + 1, j + 1]) ** 2
    assert abs(float(total_variation(x)) - sum(np.sqrt(sums))) < 1e-9


def test_l2_prior_is_mean_image_norm():
    x = torch.randn(4, 3, 7, 7, dtype=torch.float64)
    expected = np.mean([np.sqrt((x[i].numpy() ** 2).sum()) for i in range(4)])
    assert abs(float(l2_prior(x)) - expected) < 1e-10


def test_group_moments_equal_per_class_statistics():
    """Mixed-class batch: each group's mean/var equals var_mean of that class's features concatenated."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(9, 5, 4, 3, generator=g, dtype=torch.float64) * 2 + 1
    groups = torch.tensor([2, 0, 1, 2, 2, 0, 1, 1, 2])
    mean_i, sq_i = raw_moments(feats)
    mean, var = group_moments(mean_i, sq_i, groups, 3)
    for k in range(3):
        x = feats[groups == k].permute(1, 0, 2, 3).reshape(5, -1)  # channel x (images * positions)
        v, m = torch.var_mean(x, dim=1, correction=0)
        torch.testing.assert_close(mean[k], m, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(var[k], v, rtol=1e-10, atol=1e-12)


def test_group_moments_of_linear_features():
    feats = torch.randn(6, 4, dtype=torch.float64)
    groups = torch.tensor([0, 1, 0, 1, 1, 0])
    mean, var = group_moments(*raw_moments(feats), groups, 2)
    for k in range(2):
        v, m = torch.var_mean(feats[groups == k], dim=0, correction=0)
        torch.testing.assert_close(mean[k], m)
        torch.testing.assert_close(var[k], v)


def test_eq7_and_kl_against_formulas():
    g = torch.Generator().manual_seed(0)
    m, v = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.1
    tm, tv = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.1
    seg = Segments.of([1, 3])  # tap 0: channel 0; tap 1: channels 1-3
    for tap, cols in ((0, slice(0, 1)), (1, slice(1, 4))):
        expected = np.mean([np.linalg.norm(m[k, cols] - tm[k, cols]) + np.linalg.norm(v[k, cols] - tv[k, cols]) for k in range(3)])
        assert abs(float(eq7_distance(m, v, tm, tv, seg)[tap]) - expected) < 1e-12
        p = torch.distributions.Normal(m[:, cols], v[:, cols].sqrt())
        q = torch.distributions.Normal(tm[:, cols], tv[:, cols].sqrt())
        expected_kl = torch.distributions.kl_divergence(p, q).sum(dim=1).mean()
        torch.testing.assert_close(gaussian_kl(m, v, tm, tv, seg)[tap], expected_kl)


def test_eq7_gradient_is_finite_at_an_exact_match():
    m = torch.zeros(1, 2, requires_grad=True)
    eq7_distance(m, m, torch.zeros(1, 2), torch.zeros(1, 2), Segments.of([2])).sum().backward()
    assert torch.isfinite(m.grad).all()


def _terms_of_one_step(model, taps, inv: Inverter, x: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor):  # noqa: ANN001, ANN202
    """One forward of ``x`` through the engine's hooks: its term values, the BN inputs a plain hook saw, and the logits."""
    captured = {}
    hooks = [model.bn1.register_forward_pre_hook(lambda m, a: captured.__setitem__("bn1", a[0].detach())),
             model.bn2.register_forward_pre_hook(lambda m, a: captured.__setitem__("bn2", a[0].detach()))]
    with tap_hooks(model, taps, lambda tap, x: inv._record(tap, x, None)):
        logits = model(x)
    for h in hooks:
        h.remove()
    group_rows, groups = torch.unique(rows, return_inverse=True)
    return inv.term_values(x, logits, labels, groups, group_rows), captured, logits


def test_statistics_term_through_real_hooks():
    """The engine's statistics term equals Eq. 7 recomputed from features captured by a plain hook, per class group."""
    model = tiny_net().double()
    taps = resolve_taps(model, "bn-inputs")
    g = torch.Generator().manual_seed(3)
    targets = [TapTarget(t, torch.randn(2, c, generator=g, dtype=torch.float64), torch.rand(2, c, generator=g, dtype=torch.float64), w)
               for t, c, w in zip(taps, (6, 12), (10.0, 1.0))]
    prep = Preprocessing(crop=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    inv = Inverter(model, targets, prep, SynthConfig(alpha_tv=0, alpha_l2=0))
    x = torch.randn(5, 3, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([3, 1, 3, 3, 1])
    rows = torch.tensor([1, 0, 1, 1, 0])
    terms, captured, logits = _terms_of_one_step(model, taps, inv, x, labels, rows)
    expected = 0.0
    for t, name in zip(targets, ("bn1", "bn2")):
        f = captured[name]
        per_group = []
        for row in (0, 1):
            feats = f[rows == row].permute(1, 0, 2, 3).reshape(f.shape[1], -1)
            v, m = torch.var_mean(feats, dim=1, correction=0)
            per_group.append(float((m - t.mean[row]).norm() + (v - t.var[row]).norm()))
        expected += t.weight * np.mean(per_group)
    assert abs(float(terms["stats"].detach()) - expected) < 1e-9
    ce = -np.mean([float(torch.log_softmax(logits[i].detach(), 0)[labels[i]]) for i in range(5)])
    assert abs(float(terms["ce"].detach()) - ce) < 1e-9


def test_moments_gradient_matches_autograd_of_plain_formula():
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: raw_moments(t), (x,))
    m, q = raw_moments(x)
    torch.testing.assert_close(m, x.mean(dim=(2, 3)))
    torch.testing.assert_close(q, (x * x).mean(dim=(2, 3)))


def _captured_group_moments(model, x: torch.Tensor, rows: torch.Tensor) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:  # noqa: ANN001
    """Per BN input and per target row: (mean, population var) over that row's images and all positions, by a plain hook."""
    captured = {}
    hooks = [getattr(model, n).register_forward_pre_hook(lambda m, a, _n=n: captured.__setitem__(_n, a[0].detach())) for n in ("bn1", "bn2")]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    out = {}
    for name, f in captured.items():
        out[name] = []
        for row in sorted(set(rows.tolist())):
            feats = f[rows == row].permute(1, 0, 2, 3).reshape(f.shape[1], -1)
            v, m = torch.var_mean(feats, dim=1, correction=0)
            out[name].append((m, v))
    return out


def _engine_terms(feature_loss: str):  # noqa: ANN202
    model = tiny_net().double()
    taps = resolve_taps(model, "bn-inputs")
    g = torch.Generator().manual_seed(4)
    targets = [TapTarget(t, torch.randn(2, c, generator=g, dtype=torch.float64), torch.rand(2, c, generator=g, dtype=torch.float64) + 0.2, w)
               for t, c, w in zip(taps, (6, 12), (3.0, 0.5))]
    prep = Preprocessing(crop=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    inv = Inverter(model, targets, prep, SynthConfig(alpha_tv=0, alpha_l2=0, feature_loss=feature_loss))
    x = torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 0, 2, 2, 0])
    rows = torch.tensor([0, 1, 0, 1, 1, 0])
    with tap_hooks(model, taps, lambda tap, x: inv._record(tap, x, None)):
        logits = model(x)
    group_rows, groups = torch.unique(rows, return_inverse=True)
    terms = inv.term_values(x, logits, labels, groups, group_rows)
    return model, targets, x, rows, terms


def test_kl_statistics_term_through_real_hooks_by_another_route():
    """--feature-loss kl in the engine equals torch.distributions' KL of the per-class-group Gaussians, weighted per tap."""
    model, targets, x, rows, terms = _engine_terms("kl")
    moments = _captured_group_moments(model, x, rows)
    expected = 0.0
    for t, name in zip(targets, ("bn1", "bn2")):
        kls = []
        for row, (m, v) in enumerate(moments[name]):
            p = torch.distributions.Normal(m, v.sqrt())
            q = torch.distributions.Normal(t.mean[row], t.var[row].sqrt())
            kls.append(float(torch.distributions.kl_divergence(p, q).sum()))
        expected += t.weight * np.mean(kls)
    assert abs(float(terms["stats"].detach()) - expected) < 1e-8


def test_a_registered_feature_loss_is_what_the_engine_uses(monkeypatch):
    """F_l is pluggable: a loss registered by name is selected by SynthConfig(feature_loss=name) and weighted by lambda_l."""
    def mean_abs(mean, var, target_mean, target_var, segments):  # noqa: ANN001, ANN202
        return segments.sum((mean - target_mean).abs()).mean(dim=0)

    losses.FEATURE_LOSSES.register("test-mean-abs", mean_abs)
    model, targets, x, rows, terms = _engine_terms("test-mean-abs")
    moments = _captured_group_moments(model, x, rows)
    expected = sum(t.weight * np.mean([float((m - t.mean[r]).abs().sum()) for r, (m, _) in enumerate(moments[n])])
                   for t, n in zip(targets, ("bn1", "bn2")))
    assert abs(float(terms["stats"].detach()) - expected) < 1e-9
    losses.FEATURE_LOSSES.unregister("test-mean-abs")
    with pytest.raises(ConfigError, match="unknown feature loss 'test-mean-abs'"):
        SynthConfig(feature_loss="test-mean-abs")


def test_tap_weights_globs_and_first_tap_multiplier():
    taps = [Tap(n, n, "in", "bn-input") for n in ("stem.bn", "layer1.0.bn1", "layer1.0.bn2", "layer2.0.bn1")]
    assert tap_weights(taps, SynthConfig()) == [1.0, 1.0, 1.0, 1.0]  # the paper's default: equal lambda_l
    assert tap_weights(taps, SynthConfig.cifar()) == [10.0, 1.0, 1.0, 1.0]  # the CIFAR preset's first-tap multiplier
    cfg = SynthConfig(first_tap_multiplier=2.0, tap_weights={"layer1.*": 0.5, "layer1.0.bn2": 7.0, "stem.bn": 3.0})
    assert tap_weights(taps, cfg) == [6.0, 0.5, 0.5, 1.0]  # first matching glob wins; the multiplier stacks on the first tap
    with pytest.raises(ConfigError, match="'layer9.*' matches no tap; the taps are stem.bn"):
        tap_weights(taps, SynthConfig(tap_weights={"layer9.*": 2.0}))


def test_paper_and_cifar_defaults_and_the_docs_table():
    """The defaults are the paper's ImageNet ones (the paper preset), and docs/synthesis.md's option table states the imagenet
    and cifar presets as the code has them."""
    d = SynthConfig()
    assert (d.lr, d.alpha_tv, d.alpha_l2, d.alpha_cc, d.feature_loss, d.mode, d.init) == (0.25, 1e-4, 1e-5, 0.01, "eq7", "cc", "noise")
    assert d.betas == (0.5, 0.9) and d.iterations == 2000 and d.jitter == 30 and d.flip
    c = SynthConfig.cifar()
    assert (c.lr, c.alpha_tv, c.alpha_l2, c.alpha_cc, c.jitter) == (0.1, 5e-2, 0.0, 1.0, 2)
    assert SynthConfig.preset("cifar", lr=0.3).lr == 0.3 and SynthConfig.preset("paper") == d
    i = SynthConfig.imagenet()
    assert (i.param, i.lr, i.iterations) == ("fourier", 0.1, 200) and i == d.replace(param="fourier", lr=0.1, iterations=200)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "synthesis.md").read_text()
    fields = {"--iterations": "iterations", "--lr": "lr", "--alpha-tv": "alpha_tv", "--alpha-l2": "alpha_l2", "--alpha-cc": "alpha_cc",
              "--first-tap-multiplier": "first_tap_multiplier", "--jitter": "jitter", "--multires": "multires", "--batch-size": "batch_size",
              "--alpha-image-var": "alpha_image_var"}
    for option, name in fields.items():
        row = re.search(rf"^\| `{option}` \| ([^|]+) \| ([^|]+) \|", doc, flags=re.M)
        assert row is not None, option
        imagenet, cifar = (float(v.split()[0]) for v in row.groups())
        assert (imagenet, cifar) == (getattr(i, name), getattr(c, name)), option
    row = re.search(r"^\| `--jitter-wrap/--no-jitter-wrap` \| ([^|]+) \| ([^|]+) \|", doc, flags=re.M)
    assert row is not None and tuple(v.strip() for v in row.groups()) == tuple("wrap" if w else "no wrap" for w in (i.jitter_wrap, c.jitter_wrap))


def test_bad_config_values_are_clear_errors():
    for bad, match in ((dict(alpha_tv=-1.0), r"alpha_tv must be a number in \[0, "), (dict(alpha_cc=float("nan")), "alpha_cc"),
                       (dict(tap_weights={"bn1": -2.0}), "tap weight 'bn1'"), (dict(warmup=-1), "warmup"),
                       (dict(amp="fp8"), "amp must be"), (dict(multires=1.0), "multires"), (dict(lr=0.0), "learning rate"),
                       (dict(feature_loss="l1"), "unknown feature loss")):
        with pytest.raises(ConfigError, match=match):
            SynthConfig(**bad)


class _FixedRng:
    """Stands in for random.Random: fixed shifts and a fixed coin."""

    def __init__(self, shifts: list[int], coin: float) -> None:
        self.shifts, self.coin = list(shifts), coin

    def randint(self, a: int, b: int) -> int:
        v = self.shifts.pop(0)
        assert a <= v <= b
        return v

    def random(self) -> float:
        return self.coin


def test_augment_jitter_flip_and_low_resolution_against_numpy():
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    a = x.numpy()
    out = augment(x, _FixedRng([2, -3], 0.1), jitter=3, flip=True, low_res=False)  # coin < 0.5: flip
    np.testing.assert_array_equal(out.numpy(), np.roll(a, (2, -3), axis=(2, 3))[..., ::-1])
    out = augment(x, _FixedRng([-1, 1], 0.9), jitter=3, flip=True, low_res=False)  # coin >= 0.5: no flip
    np.testing.assert_array_equal(out.numpy(), np.roll(a, (-1, 1), axis=(2, 3)))
    out = augment(x, _FixedRng([1, 0], 0.9), jitter=3, flip=False, low_res=True)  # half size, jitter halved to 1
    half = a.reshape(2, 3, 3, 2, 4, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(out.numpy(), np.roll(half, (1, 0), axis=(2, 3)), rtol=0, atol=1e-12)
    assert torch.equal(augment(x, _FixedRng([], 0.9), jitter=0, flip=False, low_res=False), x)


def _recording_run(monkeypatch, **cfg):  # noqa: ANN001, ANN003, ANN202
    """Run the engine on the tiny net, recording the lr and betas of every Adam step and the input size of every forward."""
    model = tiny_net()
    seen_lr, seen_sizes = [], []
    original = torch.optim.Adam.step

    def step(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen_lr.append((self.param_groups[0]["lr"], self.param_groups[0]["betas"]))
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    handle = model.register_forward_pre_hook(lambda m, a: seen_sizes.append(tuple(a[0].shape[-2:])))
    taps = resolve_taps(model, "bn-inputs")
    targets = [TapTarget(t, torch.zeros(1, c), torch.ones(1, c)) for t, c in zip(taps, (6, 12))]
    inv = Inverter(model, targets, Preprocessing(crop=8), SynthConfig(**{"batch_size": 2, **cfg}))
    inv.run(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.rand(2, 3, 8, 8), seed=0)
    handle.remove()
    return seen_lr, seen_sizes


def test_adam_with_cosine_schedule(monkeypatch):
    lrs, _ = _recording_run(monkeypatch, iterations=8, lr=0.4)
    assert len(lrs) == 8 and all(b == (0.5, 0.9) for _, b in lrs)
    expected = [0.4 * (1 + math.cos(math.pi * i / 8)) / 2 for i in range(8)]
    np.testing.assert_allclose([lr for lr, _ in lrs], expected, rtol=1e-12)
    warm, _ = _recording_run(monkeypatch, iterations=6, lr=0.3, warmup=2)
    np.testing.assert_allclose([lr for lr, _ in warm][:3], [0.15, 0.3, 0.3], rtol=1e-12)


def test_multires_runs_the_first_fraction_at_half_resolution(monkeypatch):
    _, sizes = _recording_run(monkeypatch, iterations=6, multires=0.5, jitter=2)
    assert sizes == [(4, 4)] * 3 + [(8, 8)] * 3 + [(8, 8)]  # 3 low-res steps, 3 full, then the final verdict at full size
    _, sizes = _recording_run(monkeypatch, iterations=3)
    assert sizes == [(8, 8)] * 4


def test_amp_off_cuda_falls_back_to_float32(caplog):
    """fp16 on a CPU device logs a warning and gives exactly the float32 result; bf16 autocasts on a CPU with native
    bf16 (AVX512-BF16 or AMX: images close to float32's, not equal) and falls back like fp16 elsewhere."""
    model = tiny_net()
    taps = resolve_taps(model, "bn-inputs")
    targets = [TapTarget(t, torch.zeros(1, c), torch.ones(1, c)) for t, c in zip(taps, (6, 12))]
    init = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    out = {}
    for amp in ("none", "fp16", "bf16"):
        inv = Inverter(model, targets, Preprocessing(crop=8), SynthConfig(iterations=3, amp=amp))
        out[amp] = inv.run(torch.tensor([0, 1]), torch.tensor([0, 0]), init, seed=1).images
        assert not inv.channels_last
        assert inv.autocast_dtype == (torch.bfloat16 if amp == "bf16" and native else None)
    assert torch.equal(out["none"], out["fp16"])
    assert "needs a CUDA device" in caplog.text
    if native:
        assert not torch.equal(out["none"], out["bf16"]) and (out["none"] - out["bf16"]).abs().mean() < 0.01
    else:
        assert torch.equal(out["none"], out["bf16"])


def test_an_inverter_without_statistics_optimizes_the_other_terms_only():
    """No tap targets (e.g. cross-entropy and priors alone): the terms are CE and the priors, and a run works."""
    model = tiny_net()
    inv = Inverter(model, [], Preprocessing(crop=8), SynthConfig(batch_size=2, iterations=3, alpha_tv=1e-3, alpha_l2=1e-4))
    assert [t.name for t in inv.terms] == ["ce", "tv", "l2"]
    out = inv.run(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.rand(2, 3, 8, 8), seed=0)
    assert out.images.shape == (2, 3, 8, 8) and set(out.terms) == {"ce", "tv", "l2"}


def test_image_var_term_through_real_hooks():
    """The spread term equals ||unbiased variance of the group's per-image means - target|| from a plain hook, per group with 2+ images."""
    model = tiny_net().double()
    taps = resolve_taps(model, "bn-inputs")
    g = torch.Generator().manual_seed(4)
    targets = [TapTarget(t, torch.randn(3, c, generator=g, dtype=torch.float64), torch.rand(3, c, generator=g, dtype=torch.float64), w,
                         torch.rand(3, c, generator=g, dtype=torch.float64))
               for t, c, w in zip(taps, (6, 12), (10.0, 1.0))]
    prep = Preprocessing(crop=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    inv = Inverter(model, targets, prep, SynthConfig(alpha_tv=0, alpha_l2=0, alpha_cc=2.0, alpha_image_var=0.5))
    assert [t.name for t in inv.terms][-1] == "image_var" and inv.terms[-1].weight == 1.0
    x = torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([2, 0, 2, 2, 0, 1])  # row 1 has one image: left out
    terms, captured, _ = _terms_of_one_step(model, taps, inv, x, rows, rows)
    expected = 0.0
    for t, name in zip(targets, ("bn1", "bn2")):
        means = captured[name].mean(dim=(2, 3))
        dist = [float((torch.var(means[rows == r], dim=0, correction=1) - t.image_var[r]).norm()) for r in (0, 2)]
        expected += t.weight * np.mean(dist)
    assert abs(float(terms["image_var"].detach()) - expected) < 1e-9
    terms["image_var"].backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_image_var_term_needs_every_tap_and_a_weight():
    model = tiny_net()
    taps = resolve_taps(model, "bn-inputs")
    full = [TapTarget(t, torch.zeros(1, c), torch.ones(1, c), 1.0, torch.ones(1, c)) for t, c in zip(taps, (6, 12))]
    prep = Preprocessing(crop=8)
    names = lambda targets, **kw: [t.name for t in Inverter(model, targets, prep, SynthConfig(**kw)).terms]  # noqa: E731
    assert "image_var" in names(full, alpha_image_var=1.0)
    assert "image_var" not in names(full)  # off by default
    assert "image_var" not in names(full, alpha_image_var=1.0, alpha_cc=0.0)
    assert "image_var" not in names([full[0], TapTarget(full[1].tap, full[1].mean, full[1].var)], alpha_image_var=1.0)
    with pytest.raises(ConfigError, match="alpha_image_var"):
        SynthConfig(alpha_image_var=-1.0)
