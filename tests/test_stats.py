"""ClassMoments against an independent float64 recomputation (concatenate, then var_mean).

Per-image sums are float32 (the features' own precision), so means agree with the float64
reference to ~1e-7 and variances to ~5e-6 relative; rows where float32 would lose more digits
are recomputed exactly. Accumulation across images is float64, so batch size, order and merging
change nothing beyond float64 rounding.
"""

from __future__ import annotations

import pytest
import torch

from sowmeta.moments.class_moments import ClassMoments


def reference(x: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: all features of the class concatenated, then torch.var_mean in float64."""
    c = x.shape[1]
    means = torch.zeros(k, c, dtype=torch.float64)
    vars_ = torch.zeros(k, c, dtype=torch.float64)
    for cls in range(k):
        sel = x[y == cls].double()
        if len(sel):
            flat = sel.transpose(0, 1).reshape(c, -1)
            v, m = torch.var_mean(flat, dim=1, correction=0)
            means[cls], vars_[cls] = m, v
    return means, vars_


def feed(x: torch.Tensor, y: torch.Tensor, k: int, batch: int, order: torch.Tensor | None = None) -> ClassMoments:
    if order is not None:
        x, y = x[order], y[order]
    m = ClassMoments.zeros(k, x.shape[1])
    for i in range(0, len(x), batch):
        m.update(x[i : i + batch], y[i : i + batch])
    return m


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(37, 5, 4, 3, generator=g) * 3 + 10  # offset mean stresses naive E[x^2]-E[x]^2
    y = torch.randint(0, 4, (37,), generator=g)
    y[:4] = torch.arange(4)
    return x, y


def test_matches_float64_reference(data):
    x, y = data
    m = feed(x, y, 4, batch=7)
    rm, rv = reference(x, y, 4)
    torch.testing.assert_close(m.mean, rm, rtol=1e-7, atol=0)
    torch.testing.assert_close(m.var(), rv, rtol=5e-6, atol=0)
    assert m.images.tolist() == torch.bincount(y, minlength=4).tolist()


@pytest.mark.parametrize("batch", [1, 5, 37])
def test_batch_size_and_order_invariance(data, batch):
    x, y = data
    base = feed(x, y, 4, batch=37)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(batch))
    other = feed(x, y, 4, batch=batch, order=perm)
    torch.testing.assert_close(other.mean, base.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(other.var(), base.var(), rtol=1e-10, atol=1e-12)


def test_merge_equals_single_pass(data):
    x, y = data
    a = feed(x[:20], y[:20], 4, batch=6)
    b = feed(x[20:], y[20:], 4, batch=6)
    whole = feed(x, y, 4, batch=37)
    a.merge(b)
    torch.testing.assert_close(a.mean, whole.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.m2, whole.m2, rtol=1e-10, atol=1e-10)


def test_pooled_is_global_statistics(data):
    x, y = data
    m = feed(x, y, 4, batch=8)
    _, gmean, gvar = m.pooled()
    flat = x.double().transpose(0, 1).reshape(5, -1)
    v, mu = torch.var_mean(flat, dim=1, correction=0)
    torch.testing.assert_close(gmean, mu, rtol=1e-7, atol=0)
    torch.testing.assert_close(gvar, v, rtol=5e-6, atol=0)


def test_linear_features_and_empty_class():
    x = torch.randn(10, 3, dtype=torch.float32)
    y = torch.tensor([0, 0, 1, 1, 1, 0, 1, 0, 1, 1])
    m = feed(x, y, 3, batch=4)
    rm, rv = reference(x, y, 3)
    torch.testing.assert_close(m.mean, rm, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.var(), rv, rtol=1e-12, atol=1e-12)
    assert m.images[2] == 0 and torch.all(m.var()[2] == 0)


def test_stays_accurate_over_many_batches():
    # A large constant offset with small spread: catastrophic cancellation in naive sums.
    g = torch.Generator().manual_seed(0)
    m = ClassMoments.zeros(1, 2)
    chunks = []
    for _ in range(400):
        x = (torch.randn(64, 2, 8, 8, generator=g) * 0.01 + 1000.0).float()
        chunks.append(x)
        m.update(x, torch.zeros(64, dtype=torch.long))
    rm, rv = reference(torch.cat(chunks), torch.zeros(400 * 64, dtype=torch.long), 1)
    torch.testing.assert_close(m.mean, rm, rtol=1e-13, atol=0)
    torch.testing.assert_close(m.var(), rv, rtol=1e-7, atol=0)


@pytest.mark.parametrize("offset", [0.0, 2.9, 1e3])
@pytest.mark.parametrize("positions", [49, 1024])
def test_float32_route_and_exact_rows_match_reference(offset, positions):
    """Offsets below sqrt(10) std take the float32 sum/dot route; far larger ones are recomputed exactly."""
    g = torch.Generator().manual_seed(positions)
    x = torch.randn(24, 6, positions, generator=g) + offset
    y = torch.randint(0, 3, (24,), generator=g)
    m = feed(x, y, 3, batch=5)
    rm, rv = reference(x, y, 3)
    torch.testing.assert_close(m.mean, rm, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(m.var(), rv, rtol=5e-6, atol=0)
    half = feed(x.to(torch.bfloat16), y, 3, batch=24)  # AMP features are reduced in float32
    rm16, rv16 = reference(x.to(torch.bfloat16), y, 3)
    torch.testing.assert_close(half.var(), rv16, rtol=5e-6, atol=0)


def test_rows_far_from_their_sampled_shift_are_recomputed_exactly(monkeypatch):
    """A row whose sampled positions miss its mass (zeros there, 1000 elsewhere) is ill-conditioned about its
    shift; float32 would give its variance to ~5e-5, the exact float64 path to ~1e-12."""
    from sowmeta.moments import reduce as feature_moments, class_moments as stats

    g = torch.Generator().manual_seed(8)
    x = torch.randn(6, 3, 1024, generator=g) * 0.01 + 1000.0
    x[:, :, ::128] = 0.0  # the eight positions row_shift samples
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    exact_rows = []
    real = stats.central_moments

    def counting(v, axis=1, **kwargs):
        out = real(v, axis, **kwargs)
        shift = feature_moments.row_shift(feature_moments.rows_view(v.detach(), axis)[0])
        exact_rows.append(int(((out.mean - shift.double()).square() * out.positions > out.m2 * feature_moments.ILL_CONDITIONED).sum()))
        return out

    monkeypatch.setattr(stats, "central_moments", counting)
    m = feed(x, y, 2, batch=4)
    assert sum(exact_rows) == x.shape[0] * x.shape[1]
    rm, rv = reference(x, y, 2)
    torch.testing.assert_close(m.mean, rm, rtol=1e-12, atol=0)
    torch.testing.assert_close(m.var(), rv, rtol=1e-9, atol=0)


def test_many_classes_few_present_per_batch():
    """Batches touch only their classes' rows; every row still equals the float64 reference."""
    g = torch.Generator().manual_seed(3)
    k = 200
    x = torch.randn(60, 4, 5, 5, generator=g) * 2 + 0.5
    y = torch.randint(0, 7, (60,), generator=g) * 23  # 7 of 200 classes, far apart
    m = feed(x, y, k, batch=8)
    rm, rv = reference(x, y, k)
    torch.testing.assert_close(m.mean, rm, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(m.var(), rv, rtol=5e-6, atol=1e-12)
    assert m.images.tolist() == torch.bincount(y, minlength=k).tolist()
    absent = torch.bincount(y, minlength=k) == 0
    assert torch.all(m.count[absent] == 0) and torch.all(m.m2[absent] == 0)


def image_spread_reference(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Per class: every image's mean over its positions (float64), then their population variance."""
    per_image = x.double().reshape(x.shape[0], x.shape[1], -1).mean(dim=2)
    out = torch.zeros(k, x.shape[1], dtype=torch.float64)
    for cls in range(k):
        if (y == cls).any():
            out[cls] = torch.var(per_image[y == cls], dim=0, correction=0)
    return out


@pytest.mark.parametrize("batch", [1, 5, 37])
def test_image_var_is_the_spread_of_per_image_means(data, batch):
    x, y = data
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(batch))
    m = feed(x, y, 4, batch=batch, order=perm)
    torch.testing.assert_close(m.image_var(), image_spread_reference(x, y, 4), rtol=1e-6, atol=1e-9)
    assert bool((m.image_var() < m.var()).all())  # the spread between images is part of the class's variance


def test_image_var_merges_and_survives_column_splits(data):
    x, y = data
    a, b = feed(x[:20], y[:20], 4, batch=6), feed(x[20:], y[20:], 4, batch=7)
    a.merge(b)
    ref = image_spread_reference(x, y, 4)
    torch.testing.assert_close(a.image_var(), ref, rtol=1e-6, atol=1e-9)
    part = a.columns(1, 3).clone()
    torch.testing.assert_close(part.image_var(), ref[:, 1:3], rtol=1e-6, atol=1e-9)
    part.image_m2.zero_()
    assert bool((a.image_m2[:, 1:3] != 0).any())  # clone shares no storage


def test_image_var_with_images_of_different_sizes():
    # batches of different resolutions: each image's mean counts once, whatever its positions
    g = torch.Generator().manual_seed(3)
    small, large = torch.randn(6, 2, 2, 2, generator=g), torch.randn(5, 2, 6, 6, generator=g) + 1
    ys, yl = torch.tensor([0, 1, 0, 1, 0, 1]), torch.tensor([1, 0, 1, 0, 0])
    m = ClassMoments.zeros(2, 2)
    m.update(small, ys)
    m.update(large, yl)
    means = torch.cat([small.double().mean((2, 3)), large.double().mean((2, 3))])
    labels = torch.cat([ys, yl])
    for cls in range(2):
        torch.testing.assert_close(m.image_var()[cls], torch.var(means[labels == cls], dim=0, correction=0), rtol=1e-6, atol=1e-9)
