"""The objective as terms: each a name, a weight and a function of one optimization step.

The engine minimizes the sum of ``weight * value(step)`` over its terms. The paper's five
(cross-entropy, total variation, l2, statistics, and the spread of the images' means) are built
here from a ``SynthConfig``; a term of your own is one more ``Term`` passed to
``synthesize(..., terms=[...])``: no engine code changes (lucent's composable objectives are the model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .config import SynthConfig
from .losses import FeatureLoss, Segments, group_moments, l2_prior, spread_distance, total_variation

__all__ = ["Term", "Step", "TargetStats", "objective", "check_terms", "BUILT_IN"]

BUILT_IN = ("ce", "tv", "l2", "stats", "image_var")


@dataclass
class TargetStats:
    """Every target tap's statistics side by side on one channel axis (rows R x C_total), so a term is a handful of ops."""

    taps: list[str]
    mean: torch.Tensor
    var: torch.Tensor
    image_var: torch.Tensor | None  # the spread of the images' means, where every tap has it
    weight: torch.Tensor  # lambda_l per tap
    segments: Segments


@dataclass
class Step:
    """What a term may look at in one iteration."""

    x: torch.Tensor  # the images being optimized, in the model's input space (B x 3 x H x W)
    logits: torch.Tensor
    labels: torch.Tensor  # target class of every image
    groups: torch.Tensor  # every image's class group (0..G-1)
    group_rows: torch.Tensor  # each group's row in the target statistics
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]]  # per tap: per-image mean and mean of squares
    targets: TargetStats | None = None
    joint: tuple[torch.Tensor, torch.Tensor] | None = None  # the targets' taps side by side (B x C_total), once per step

    def joint_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image means and means of squares of every target tap side by side (B x C_total), built once per step."""
        if self.joint is None:
            taps = self.targets.taps  # type: ignore[union-attr]
            self.joint = (torch.cat([self.moments[t][0] for t in taps], dim=1), torch.cat([self.moments[t][1] for t in taps], dim=1))
        return self.joint


@dataclass(frozen=True)
class Term:
    """One term of the objective: a name (shown by the progress display), a weight, and its value at a step.

    Example (images that are colourful: the spread of the channels at each pixel, rewarded):
        >>> saturation = Term("saturation", 0.05, lambda step: -step.x.std(dim=1).mean())
    """

    name: str
    weight: float
    value: Callable[[Step], torch.Tensor]


def cross_entropy(step: Step) -> torch.Tensor:
    """CE of the target classes (in at least float32 under AMP)."""
    logits = step.logits
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), step.labels)


def tv(step: Step) -> torch.Tensor:
    """R_TV of the images."""
    return total_variation(step.x)


def l2(step: Step) -> torch.Tensor:
    """R_l2 of the images."""
    return l2_prior(step.x)


def statistics(feature_loss: FeatureLoss) -> Callable[[Step], torch.Tensor]:
    """alpha_CC's term: sum over taps of lambda_l F_l(class-group statistics of the batch, their targets)."""

    def value(step: Step) -> torch.Tensor:
        t = step.targets
        mean_i, sq_i = step.joint_moments()
        mean, var = group_moments(mean_i, sq_i, step.groups, len(step.group_rows))
        per_tap = feature_loss(mean, var, t.mean[step.group_rows], t.var[step.group_rows], t.segments)  # type: ignore[union-attr]
        return (t.weight * per_tap).sum()  # type: ignore[union-attr]

    return value


def spread(step: Step) -> torch.Tensor:
    """The spread term: sum over taps of lambda_l ||Var over a class group's images of their means - image_var||_2.

    Matching only the pooled variance lets every image take the whole class's spread: each image
    gets the contrast of the class and all images the same tone. This term asks the images of a
    group to differ from each other as much as the class's real images do. Groups of one image are left out.
    """
    t = step.targets
    mean_i = step.joint_moments()[0]
    g = len(step.group_rows)
    _, var = group_moments(mean_i, mean_i * mean_i, step.groups, g)
    n = torch.bincount(step.groups, minlength=g).to(var.dtype)[:, None]
    var = var * n / (n - 1).clamp_min(1)  # n images see (n - 1) / n of the spread of their class
    dist = spread_distance(var, t.image_var[step.group_rows], t.segments)  # type: ignore[union-attr,index]
    keep = (n > 1).to(dist.dtype)
    return (t.weight * (dist * keep).sum(dim=0) / keep.sum().clamp_min(1)).sum()  # type: ignore[union-attr]


def objective(config: SynthConfig, targets: TargetStats | None, feature_loss: FeatureLoss, extra: Sequence[Term] = ()) -> list[Term]:
    """The paper's Eq. 1-7 as terms: CE (alpha_ce), R_TV (alpha_tv), R_l2 (alpha_l2), statistics (alpha_cc),
    the spread of the images' means (alpha_cc * alpha_image_var, where the targets have it), then ``extra``.

    CE is always computed (its value is what the display shows first); the others only with a weight.
    """
    terms = [Term("ce", config.alpha_ce, cross_entropy)]
    terms += [Term(n, w, f) for n, w, f in (("tv", config.alpha_tv, tv), ("l2", config.alpha_l2, l2)) if w]
    if config.alpha_cc and targets is not None:
        terms.append(Term("stats", config.alpha_cc, statistics(feature_loss)))
    if config.alpha_cc and config.alpha_image_var and targets is not None and targets.image_var is not None:
        terms.append(Term("image_var", config.alpha_cc * config.alpha_image_var, spread))
    return terms + list(extra)


def check_terms(terms: Sequence[Term]) -> tuple[Term, ...]:
    """Terms a user adds: each a ``Term`` with a finite weight, a callable value and a name no other term has."""
    seen = set(BUILT_IN)
    for t in terms:
        if not isinstance(t, Term):
            raise ConfigError(f"a term is a sowmeta.synth.Term(name, weight, value), not a {type(t).__name__}")
        if not isinstance(t.weight, (int, float)) or not math.isfinite(t.weight):
            raise ConfigError(f"term {t.name!r} has weight {t.weight!r}; give a finite number")
        if not callable(t.value):
            raise ConfigError(f"term {t.name!r}: value must be a function of a Step returning a scalar tensor")
        if t.name in seen:
            raise ConfigError(f"two terms are named {t.name!r} (the built-in ones are {', '.join(BUILT_IN)}); give yours another name")
        seen.add(t.name)
    return tuple(terms)
