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
    "gaussian_kl",
    "total_variation",
    "l2_prior",
    "per_image_moments",
]


@dataclass(frozen=True)
class Segments:
    """Which tap every channel of the concatenated channel axis belongs to (all taps are scored in one go)."""

    index: torch.Tensor  # int64 [C_total], values 0..taps-1
    taps: int

    @classmethod
    def of(cls, channels: list[int], device: torch.device | str = "cpu") -> Segments:
        index = torch.repeat_interleave(torch.arange(len(channels)), torch.tensor(channels))
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


class _Moments(torch.autograd.Function):
    """Per-image, per-channel E[x] and E[x^2] over positions, in float32, with a one-kernel backward.

    ``x`` is [B, C, P] (channels first) or [B, P, C] (``last``: token sequences and
    channels-last maps). Forward: on CUDA one Welford pass (``var_mean``); on the CPU, where
    ``var_mean`` is slow, a sum and a batched dot product (two reads, no temporary). The backward
    is d/dx = (g_mean + 2 x g_sq) / n: one fused multiply-add over the feature map, instead of
    the several passes autograd would make. ``x`` is saved as it is (bf16 under autocast), and
    the tapped layer keeps it for its own backward anyway, so saving it costs nothing.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, last: bool) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.last = last  # type: ignore[attr-defined]
        flat = x if x.dtype in (torch.float32, torch.float64) else x.float()
        dim = 1 if last else 2
        if flat.is_cuda:
            var, mean = torch.var_mean(flat, dim=dim, correction=0)
            return mean, var + mean * mean
        n = flat.shape[dim]
        if last:
            return flat.sum(1) / n, torch.einsum("bpc,bpc->bc", flat, flat) / n
        rows = flat.reshape(-1, 1, n)
        sq = torch.bmm(rows, rows.transpose(1, 2)).view(flat.shape[:2]) / n
        return flat.sum(-1) / n, sq

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g_mean: torch.Tensor, g_sq: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        last = ctx.last  # type: ignore[attr-defined]
        n = x.shape[1] if last else x.shape[2]
        shape = (g_mean.shape[0], 1, g_mean.shape[1]) if last else (*g_mean.shape, 1)
        return torch.addcmul((g_mean / n).view(shape), x, (g_sq * (2.0 / n)).view(shape)).to(x.dtype), None


def per_image_moments(x: torch.Tensor, axis: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and mean of squares (B x C each) of features whose channels are on ``axis``.

    Reduced immediately inside the forward hook so no feature map is kept beyond autograd's
    own needs; computed in float32 even under autocast. Axis 1 (NCHW, [B, C]) and the last axis
    ([B, L, D] tokens, channels-last maps) are read in place; another axis is moved first.
    """
    if x.dim() == 2:
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()
        return x, x * x
    axis = axis % x.dim()
    if axis == 1:
        return _Moments.apply(x.flatten(2), False)
    if axis != x.dim() - 1:
        x = x.movedim(axis, -1)
    return _Moments.apply(x.reshape(x.shape[0], -1, x.shape[-1]), True)


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
