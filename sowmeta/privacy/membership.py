"""A likelihood-ratio membership test on per-image feature moments against a bundle's per-class moments.

The score of an image of class k is, summed over taps t and channels c, the Gaussian
log-likelihood of its channel mean m_tc under its class's recorded distribution of image means
(mean mu_ktc, variance v_ktc = image_var, or var in bundles without it) minus that under the
population's (global_mean, and the count-weighted pooling of the classes' image variances):

    score = sum_tc log N(m_tc; mu_ktc, v_ktc + f_tc) - log N(m_tc; mu_tc, V_tc + f_tc),  f = 0.01 V

An image that took part pulls its class's moments towards itself, so members score higher;
how much higher is the leak. The floor f keeps a class of one image (image_var 0) finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..bundle import Bundle

__all__ = ["FLOOR", "ClassDensities", "MembershipResult", "separation", "advantage_bound"]

FLOOR = 0.01  # the variance floor, as a fraction of the population's variance of image means


@dataclass(frozen=True)
class ClassDensities:
    """Per tap, the class (mean, variance) and the population (mean, variance) of per-image channel means."""

    class_mean: dict[str, torch.Tensor]  # [K, C] float64
    class_var: dict[str, torch.Tensor]
    pop_mean: dict[str, torch.Tensor]  # [C]
    pop_var: dict[str, torch.Tensor]

    @classmethod
    def of(cls, bundle: Bundle) -> ClassDensities:
        w = bundle.counts.to(torch.float64)
        w = w / w.sum().clamp_min(1)
        out: tuple[dict, dict, dict, dict] = ({}, {}, {}, {})
        for name, s in bundle.stats.items():
            mean = s.mean.double()
            spread = (s.image_var if s.image_var is not None else s.var).double()
            pop_mean = s.global_mean.double()
            pop_var = w @ (spread + (mean - pop_mean).square())
            floor = FLOOR * pop_var.clamp_min(1e-12)
            for d, v in zip(out, (mean, spread + floor, pop_mean, pop_var + floor)):
                d[name] = v
        return cls(*out)

    def score(self, tap: str, img_mean: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each image's log-likelihood ratio at ``tap`` [N] from its channel means [N, C] and classes [N]."""
        m = img_mean.double()
        mu, var = self.class_mean[tap][labels], self.class_var[tap][labels]
        own = -0.5 * ((m - mu).square() / var + var.log())
        pop = -0.5 * ((m - self.pop_mean[tap]).square() / self.pop_var[tap] + self.pop_var[tap].log())
        return (own - pop).sum(dim=1)


@dataclass(frozen=True)
class MembershipResult:
    """How well the score tells members from non-members: the best threshold's TPR - FPR, and the ROC's area."""

    members: int
    non_members: int
    advantage: float  # max over thresholds of TPR - FPR
    auc: float
    tpr: float
    fpr: float
    chance: float  # the advantage that 95 % of label shuffles stay below: what sampling alone shows at these sizes
    bound: float | None  # what the bundle's (epsilon, delta) allows, when it has a guarantee


def _advantage(scores: torch.Tensor, is_member: torch.Tensor) -> tuple[float, float, float]:
    """(TPR - FPR, TPR, FPR) at the best threshold "score >= t means member"."""
    order = torch.argsort(scores, descending=True, stable=True)
    hits = is_member[order].to(torch.float64)
    tpr = torch.cumsum(hits, 0) / hits.sum()
    fpr = torch.cumsum(1 - hits, 0) / (1 - hits).sum()
    # only thresholds between distinct scores count: ties are decided together
    s = scores[order]
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    gap = torch.where(last, tpr - fpr, torch.full_like(tpr, -1.0))
    i = int(gap.argmax())
    return max(float(gap[i]), 0.0), float(tpr[i]), float(fpr[i])


def _auc(scores: torch.Tensor, is_member: torch.Tensor) -> float:
    """Area under the ROC: the probability that a member outscores a non-member (ties count half), by average ranks."""
    order = torch.argsort(scores)
    s = scores[order]
    ranks = torch.empty_like(s, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    _, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    tie_sum = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, ranks[order])
    ranks[order] = (tie_sum / counts)[inverse]
    n1 = int(is_member.sum())
    n0 = len(scores) - n1
    return float((ranks[is_member].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def separation(member_scores: torch.Tensor, non_member_scores: torch.Tensor, *, bound: float | None = None, shuffles: int = 200) -> MembershipResult:
    """Advantage and AUC of the scores, with the advantage label shuffles reach (seeded, so reruns agree)."""
    scores = torch.cat([member_scores, non_member_scores]).double()
    is_member = torch.cat([torch.ones(len(member_scores), dtype=torch.bool), torch.zeros(len(non_member_scores), dtype=torch.bool)])
    adv, tpr, fpr = _advantage(scores, is_member)
    g = torch.Generator().manual_seed(0)
    null = sorted(_advantage(scores, is_member[torch.randperm(len(scores), generator=g)])[0] for _ in range(shuffles))
    return MembershipResult(len(member_scores), len(non_member_scores), adv, _auc(scores, is_member), tpr, fpr, null[int(0.95 * (shuffles - 1))], bound)


def advantage_bound(epsilon: float, delta: float) -> float:
    """The largest TPR - FPR any membership test can have against an (epsilon, delta)-DP release.

    DP gives TPR <= e^eps FPR + delta and, for the complementary test, 1 - FPR <= e^eps (1 - TPR) + delta;
    TPR - FPR is largest where both hold with equality: FPR = (1 - delta)/(e^eps + 1), so
    TPR - FPR = (e^eps - 1 + 2 delta)/(e^eps + 1).
    """
    if math.isinf(epsilon):
        return 1.0
    return min(1.0, (math.expm1(epsilon) + 2 * delta) / (math.exp(epsilon) + 1))
