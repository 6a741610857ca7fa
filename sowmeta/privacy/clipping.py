"""``ClippedSums``: each image's contribution to its class's sums bounded, then released once with Gaussian noise.

A bundle's rows at a tap with C channels are functions of four sums per class k over its images i
(``m_i``: the image's per-channel mean over positions, ``s_i``: its per-channel mean of squares):
the count n_k, S1 = sum m_i, S2 = sum s_i and S3 = sum m_i^2; mean = S1/n, var = S2/n - mean^2,
image_var = S3/n - mean^2 (format 1.3), and the globals are their count-weighted pooling.

**Clipping.** An image's energy at a tap is e_i = (mean_c s_ic^2)^(1/4), in the features' units.
With the tap's bound B, an image with e_i > B has its features there scaled by B/e_i (``m`` by that
factor, ``s`` and ``m^2`` by its square; nothing is clipped per channel, so the moments stay
consistent). Then ||s||_2 <= B^2 sqrt(C); ||m^2||_2 <= ||s||_2 because 0 <= m_c^2 <= s_c; and
||m||_2^2 <= ||s||_1 <= sqrt(C) ||s||_2, so ||m||_2 <= B sqrt(C).

**Sensitivity.** Every sum is scaled by its bound (n by 1, S1 by B sqrt(C), S2 and S3 by
B^2 sqrt(C)). Adding or removing one image changes one class's scaled count by 1 and each tap's
three scaled sums by at most 1 in L2, so the whole released vector moves by at most
sqrt(1 + 3T) for T taps. Gaussian noise of std sigma x sqrt(1 + 3T) on every scaled coordinate,
sigma from the accountant, is (epsilon, delta)-DP; the rows are computed from the noisy sums
(post-processing, which costs no privacy).

**Bounds.** B = clip x the tap's reference energy, (mean_c (mu_c^2 + sigma_c^2)^2)^(1/4) from the
BatchNorm's running statistics: they are part of the published weights, so the bound depends on no
image of the collection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError
from ..models.taps import Tap
from ..moments.class_moments import ClassMoments

__all__ = ["ClippedSums", "clip_scale", "reference_energy", "tap_bounds", "moments_from_sums"]


def clip_scale(s: torch.Tensor, bound: float) -> torch.Tensor:
    """Per image [N], the factor (<= 1) that brings its energy (mean_c s_c^2)^(1/4) within ``bound``; ``s`` [N, C] mean squares."""
    energy = s.square().mean(dim=1).pow(0.25)
    return torch.where(energy > bound, bound / energy.clamp_min(torch.finfo(energy.dtype).tiny), torch.ones_like(energy))


def reference_energy(bn: _BatchNorm) -> float:
    """The energy of a typical input of ``bn``: (mean_c (running_mean^2 + running_var)^2)^(1/4)."""
    square = bn.running_mean.double().square() + bn.running_var.double()  # type: ignore[union-attr]
    return float(square.square().mean().pow(0.25))


def tap_bounds(model: nn.Module, taps: Sequence[Tap], clip: float) -> dict[str, float]:
    """Each tap's bound B = ``clip`` x its reference energy; refuses a tap whose scale is not public (not a BatchNorm's input)."""
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigError(f"--dp-clip {clip} is not a positive number; pass e.g. 1.5 (multiples of each tap's typical energy)")
    named = dict(model.named_modules())
    bounds = {}
    for t in taps:
        bn = named.get(t.module)
        if not (isinstance(bn, _BatchNorm) and t.position == "in" and bn.running_mean is not None and bn.running_var is not None):
            raise ConfigError(
                f"tap {t.name!r} is not the input of a BatchNorm with running statistics, so its clipping bound has no public "
                "scale; collect with differential privacy on --taps bn-inputs of an unfused model"
            )
        bounds[t.name] = clip * reference_energy(bn)
    return bounds


def moments_from_sums(images: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, s3: torch.Tensor, positions: int) -> ClassMoments:
    """Per-class moments from (possibly noisy) sums: variances clamped to >= 0, image_var to <= var, empty classes zero."""
    n = images.to(torch.float64).unsqueeze(1)
    safe = n.clamp_min(1)
    present = n > 0
    mean = torch.where(present, s1 / safe, 0.0)
    var = torch.where(present, (s2 / safe - mean.square()).clamp_min(0), 0.0)
    image_var = torch.minimum(torch.where(present, (s3 / safe - mean.square()).clamp_min(0), 0.0), var)
    count = (n * positions).expand_as(mean).clone()
    return ClassMoments(count, mean, var * count, images.clone(), mean.clone(), image_var * n)


@dataclass
class _TapSums:
    bound: float
    s1: torch.Tensor  # float64 [K, C]: sum of clipped per-image means
    s2: torch.Tensor  # sum of clipped per-image mean squares
    s3: torch.Tensor  # sum of squared clipped per-image means
    positions: int = 0

    def scales(self) -> tuple[float, float]:
        """The L2 bound of one image's clipped mean vector and of its mean-square (and squared-mean) vector."""
        root = math.sqrt(self.s1.shape[1])
        return self.bound * root, self.bound**2 * root


class ClippedSums:
    """Per class and tap, the sums of clipped per-image moments, and their Gaussian release.

    Example::

        sums = ClippedSums(bounds, channels, num_classes=10)
        sums.add_images(labels); sums.fold("layer1.0.bn1", img_mean, img_m2, positions, labels)
        counts, moments = sums.release(noise_multiplier(8, 1e-5).sigma)   # may be called again with another sigma
    """

    def __init__(self, bounds: Mapping[str, float], channels: Mapping[str, int], num_classes: int, device: torch.device | str = "cpu") -> None:
        self.counts = torch.zeros(num_classes, dtype=torch.float64, device=device)

        def zeros(name: str) -> torch.Tensor:
            return torch.zeros(num_classes, channels[name], dtype=torch.float64, device=device)

        self.taps = {name: _TapSums(float(bounds[name]), zeros(name), zeros(name), zeros(name)) for name in channels}

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of the scaled sums under adding or removing one image: sqrt(1 + 3 x taps)."""
        return math.sqrt(1 + 3 * len(self.taps))

    def add_images(self, labels: torch.Tensor) -> None:
        """Count one batch's images in their classes (once per batch, for every tap)."""
        self.counts.index_add_(0, labels.to(self.counts.device), torch.ones(labels.shape[0], dtype=torch.float64, device=self.counts.device))

    def fold(self, tap: str, img_mean: torch.Tensor, img_m2: torch.Tensor, positions: int, labels: torch.Tensor) -> None:
        """Clip a batch's per-image moments at ``tap`` (mean and M2 over ``positions``, [N, C]) and add them to their classes' sums."""
        t = self.taps[tap]
        if t.positions and t.positions != positions:
            raise ConfigError(f"tap {tap!r} saw maps of {positions} positions after {t.positions}; collect with differential privacy at one input size")
        t.positions = positions
        dev = t.s1.device
        m = img_mean.to(dev, torch.float64)
        s = img_m2.to(dev, torch.float64) / positions + m.square()
        scale = clip_scale(s, t.bound).unsqueeze(1)
        m = m * scale
        s = s * scale.square()
        y = labels.to(dev)
        t.s1.index_add_(0, y, m)
        t.s2.index_add_(0, y, s)
        t.s3.index_add_(0, y, m.square())

    def noisy(self, sigma: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """The sums with noise of std sigma x sensitivity x each sum's bound, drawn now: counts [K] and per tap (S1, S2, S3), float64.

        The sums themselves are left as they are, so one clipped pass can be released at several sigmas.
        """
        scale = sigma * self.sensitivity

        def noised(total: torch.Tensor, bound: float) -> torch.Tensor:
            if scale == 0:
                return total.clone()
            noise = torch.randn(total.shape, dtype=torch.float64, generator=generator, device="cpu").to(total.device)
            return total + noise * (scale * bound)

        counts = noised(self.counts, 1.0)
        sums = {}
        for name, t in self.taps.items():
            mean_bound, square_bound = t.scales()
            sums[name] = (noised(t.s1, mean_bound), noised(t.s2, square_bound), noised(t.s3, square_bound))
        return counts, sums

    def release(self, sigma: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, ClassMoments]]:
        """``noisy`` sums made into per-class moments (``moments_from_sums``): the released counts (int64 [K], rounded, >= 0) and each tap's moments."""
        counts, sums = self.noisy(sigma, generator)
        images = counts.round().clamp_min(0).to(torch.int64)
        return images, {name: moments_from_sums(images, *sums[name], max(self.taps[name].positions, 1)) for name in sums}
