"""The terms of the synthesis objective (paper Eq. 1-7), each a small function of tensors.

Image priors (``total_variation``, ``l2_prior``) follow DeepInversion's definitions so that the
paper's coefficients (alpha_TV 1e-4, alpha_l2 1e-5) mean what they meant there. The statistics
term compares the statistics of each *class group* of a batch with that class's recorded
statistics; ``group_moments`` computes them for all groups at once (no loop over classes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..named import Registry

__all__ = [
    "FeatureLoss",
    "Segments",
    "FEATURE_LOSSES",
    "register_feature_loss",
    "get_feature_loss",
    "group_moments",
    "eq7_distance",
    "spread_distance",
    "gaussian_kl",
    "total_variation",
    "l2_prior",
]


@dataclass(frozen=True)
class Segments:
    """Which tap every channel of the concatenated channel axis belongs to (all taps are scored in one go)."""

    index: torch.Tensor  # int64 [C_total], values 0..taps-1
    taps: int

    @classmethod
    def of(cls, channels: list[int], device: torch.device | str = "cpu") -> Segments:
        index = torch.repeat_interleave(torch.arange(len(channels)), torch.tensor(channels, dtype=torch.long))
        return cls(index.to(device), len(channels))

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum the channels of each tap: G x C_total -> G x taps."""
        return values.new_zeros(values.shape[0], self.taps).index_add_(1, self.index, values)


# F_l(mean, var, target_mean, target_var, segments) -> [taps]: for every tap, its distance
# averaged over the class groups. mean/var/targets are G x C_total (all taps' channels side by side).
FeatureLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Segments], torch.Tensor]
FEATURE_LOSSES: Registry[FeatureLoss] = Registry("feature loss")


def register_feature_loss(name: str, *, replace: bool = False) -> Callable[[FeatureLoss], FeatureLoss]:
    """Register an F_l under ``name`` (selectable with ``SynthConfig(feature_loss=name)`` / ``--feature-loss``)."""
    return FEATURE_LOSSES.register(name, replace=replace)


def get_feature_loss(name: str) -> FeatureLoss:
    """The F_l registered under ``name`` (``ConfigError`` with a did-you-mean otherwise)."""
    return FEATURE_LOSSES.get(name)


def group_moments(
    mean_i: torch.Tensor, sq_i: torch.Tensor, groups: torch.Tensor | None, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance (G x C) of each group of images, from per-image moments.

    Every image has the same number of positions, so a group's mean is the average of its
    images' means, and its variance is E[x^2] - E[x]^2 over the group. ``groups`` (B, values
    0..G-1) assigns images to groups; None means one group of the whole batch.
    """
    if groups is None or num_groups == 1:
        mean = mean_i.mean(dim=0, keepdim=True)
        return mean, sq_i.mean(dim=0, keepdim=True) - mean * mean
    weights = F.one_hot(groups, num_groups).to(mean_i.dtype).T  # G x B
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1)
    mean = weights @ mean_i
    return mean, weights @ sq_i - mean * mean


def _norm(squares: torch.Tensor) -> torch.Tensor:
    # sqrt with a zero (not infinite) gradient where a distance is exactly zero, like Tensor.norm
    return squares.clamp_min(1e-30).sqrt()


@register_feature_loss("eq7")
def eq7_distance(mean: torch.Tensor, var: torch.Tensor, target_mean: torch.Tensor, target_var: torch.Tensor, segments: Segments) -> torch.Tensor:
    """Paper Eq. 7 per tap: ||Mean - mu||_2 + ||Var - sigma^2||_2 per group, averaged over the groups."""
    return (_norm(segments.sum((mean - target_mean).square())) + _norm(segments.sum((var - target_var).square()))).mean(dim=0)


def spread_distance(spread: torch.Tensor, target: torch.Tensor, segments: Segments) -> torch.Tensor:
    """||Var of the images' means - the class's||_2 per group and tap (G x taps): Eq. 7's variance part, one level up."""
    return _norm(segments.sum((spread - target).square()))


@register_feature_loss("kl")
def gaussian_kl(
    mean: torch.Tensor, var: torch.Tensor, target_mean: torch.Tensor, target_var: torch.Tensor, segments: Segments, eps: float = 1e-5
) -> torch.Tensor:
    """KL(N(mean, var) || N(target)) per channel, summed over each tap's channels, averaged over groups."""
    v, tv = var.clamp_min(eps), target_var.clamp_min(eps)
    kl = 0.5 * (torch.log(tv / v) + (v + (mean - target_mean).square()) / tv - 1)
    return segments.sum(kl).mean(dim=0)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's R_TV (l2 form): Frobenius norms of the differences to the right, down and both diagonals, summed."""
    d1 = x[:, :, :, :-1] - x[:, :, :, 1:]
    d2 = x[:, :, :-1, :] - x[:, :, 1:, :]
    d3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    d4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
    return d1.norm() + d2.norm() + d3.norm() + d4.norm()


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """R_l2: the mean over images of each image's Euclidean norm."""
    return x.flatten(1).norm(dim=1).mean()
