"""Every term of the synthesis objective against an independent computation (float64, loops, numpy)."""

from __future__ import annotations

import numpy as np
import torch
from conftest import tiny_net

from sowmeta.synth.config import SynthConfig
from sowmeta.synth.engine import Inverter, TapTarget
from sowmeta.synth.losses import Segments, eq7_distance, gaussian_kl, group_moments, l2_prior, per_image_moments, total_variation
from sowmeta.preprocess import Preprocessing
from sowmeta.taps import resolve_taps


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
    mean_i, sq_i = per_image_moments(feats)
    mean, var = group_moments(mean_i, sq_i, groups, 3)
    for k in range(3):
        x = feats[groups == k].permute(1, 0, 2, 3).reshape(5, -1)  # channel x (images * positions)
        v, m = torch.var_mean(x, dim=1, correction=0)
        torch.testing.assert_close(mean[k], m, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(var[k], v, rtol=1e-10, atol=1e-12)


def test_group_moments_of_linear_features():
    feats = torch.randn(6, 4, dtype=torch.float64)
    groups = torch.tensor([0, 1, 0, 1, 1, 0])
    mean, var = group_moments(*per_image_moments(feats), groups, 2)
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
    captured = {}
    hooks = [model.bn1.register_forward_pre_hook(lambda m, a: captured.__setitem__("bn1", a[0].detach())),
             model.bn2.register_forward_pre_hook(lambda m, a: captured.__setitem__("bn2", a[0].detach()))]
    from sowmeta.taps import tap_hooks

    with tap_hooks(model, taps, inv._record):
        logits = model(x)
    for h in hooks:
        h.remove()
    group_rows, groups = torch.unique(rows, return_inverse=True)
    terms = inv._terms(x, logits, labels, groups, group_rows)
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
    torch.autograd.gradcheck(lambda t: per_image_moments(t), (x,))
    m, q = per_image_moments(x)
    torch.testing.assert_close(m, x.mean(dim=(2, 3)))
    torch.testing.assert_close(q, (x * x).mean(dim=(2, 3)))
