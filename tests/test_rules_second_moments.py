"""Rule global-pooling accepts what a writer that derives variances from float64 sums of squares writes, even for a
nearly constant channel far from 0 (a dead channel of a BatchNorm-fused network: mean -1.08, variance ~1e-15)."""

from __future__ import annotations

import pytest
import torch

from sowmeta.bundle.rules import RuleBroken, check_pooling


def _written_from_sums(features: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """counts, mean, var per class and the globals, as a writer derives them: float64 sums of x and x^2, then float32."""
    s1 = torch.stack([f.double().sum() for f in features])
    s2 = torch.stack([f.double().square().sum() for f in features])
    n = torch.tensor([float(len(f)) for f in features], dtype=torch.float64)
    mean, var = s1 / n, s2 / n - (s1 / n).square()
    g_mean = s1.sum() / n.sum()
    g_var = s2.sum() / n.sum() - g_mean.square()
    return n.long(), mean[:, None].float(), var.clamp_min(0)[:, None].float(), g_mean[None].float(), g_var.clamp_min(0)[None].float()


@pytest.mark.parametrize("seed", range(20))
def test_a_dead_channel_far_from_zero_passes(seed: int):
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(-1.0818040370941162, dtype=torch.float32)
    ulp = float(torch.nextafter(base, torch.tensor(0.0)) - base)
    # 40 classes of 1-3 images, each 49 positions a few float32 steps from the constant
    features = [(base + ulp * torch.randint(-2, 3, (int(torch.randint(1, 4, (1,), generator=g)) * 49,), generator=g)).float() for _ in range(40)]
    check_pooling("t", *_written_from_sums(features), "float32")


def test_global_statistics_of_other_images_still_fail():
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(49, generator=g) * 0.5 + 2 for _ in range(10)]
    counts, mean, var, g_mean, g_var = _written_from_sums(features)
    with pytest.raises(RuleBroken, match="global_var"):
        check_pooling("t", counts, mean, var, g_mean, g_var * 1.001, "float32")
