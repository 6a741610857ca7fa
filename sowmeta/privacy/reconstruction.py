"""How close synthesized images come to the collection's images: nearest member versus nearest non-member.

For every synthesized image of class k, the distance to the closest image of class k among the
members (the images the statistics came from) and among the non-members, in a judge's
penultimate features and in pixels (root mean square over pixels and colours, 0-1 scale). A bundle
that lets synthesis copy its images puts them nearer the members than the non-members.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.export import readable_scale, save_png, sheet

__all__ = ["ReconstructionResult", "penultimate", "nearest", "reconstruction", "save_pairs"]


@dataclass(frozen=True)
class ReconstructionResult:
    """Medians over the synthesized images of the nearest distances, and how often the nearest is a member."""

    images: int
    feature_member: float
    feature_non_member: float
    pixel_member: float
    pixel_non_member: float
    closer_to_member: float  # fraction of synthesized images whose nearest image (judge features) is a member
    pairs: str | None = None  # the PNG of the closest pairs


def penultimate(module: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The input of the model's last ``nn.Linear`` (its penultimate features) for normalized images ``x``."""
    last = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("the judge has no nn.Linear classifier to read penultimate features from")
    seen: list[torch.Tensor] = []
    handle = last[-1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().flatten(1).double()))
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                module(x[i:i + batch_size])
    finally:
        handle.remove()
    return torch.cat(seen)


def nearest(queries: torch.Tensor, pool: torch.Tensor, q_labels: torch.Tensor, p_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query [N, D], the L2 distance to the nearest pool row of its own class, and that row's index (inf, -1 when none)."""
    dist = torch.full((len(queries),), float("inf"), dtype=torch.float64)
    index = torch.full((len(queries),), -1, dtype=torch.int64)
    for k in torch.unique(q_labels).tolist():
        q, p = q_labels == k, torch.nonzero(p_labels == k).flatten()
        if len(p):
            d = torch.cdist(queries[q].double(), pool[p].double())
            best, at = d.min(dim=1)
            dist[q], index[q] = best, p[at]
    return dist, index


def reconstruction(synth: torch.Tensor, members: torch.Tensor, non_members: torch.Tensor, labels: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   features: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[ReconstructionResult, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Nearest-member and nearest-non-member distances of ``synth`` (pixels in [0, 1], N x 3 x H x W; features [N, D]).

    ``labels`` and ``features`` are given for (synth, members, non_members). Returns the result and,
    per synthesized image, its feature distance to the nearest member and both nearest indices (for the pairs).
    """
    flat = [t.flatten(1).double() / t[0].numel() ** 0.5 for t in (synth, members, non_members)]
    f_mem, i_mem = nearest(features[0], features[1], labels[0], labels[1])
    f_non, i_non = nearest(features[0], features[2], labels[0], labels[2])
    p_mem, _ = nearest(flat[0], flat[1], labels[0], labels[1])
    p_non, _ = nearest(flat[0], flat[2], labels[0], labels[2])
    ok = torch.isfinite(f_mem) & torch.isfinite(f_non)
    if not bool(ok.any()):
        raise ValueError("no synthesized image has both a member and a non-member of its class to compare with")
    result = ReconstructionResult(int(ok.sum()), float(f_mem[ok].median()), float(f_non[ok].median()), float(p_mem[ok].median()),
                                  float(p_non[ok].median()), float((f_mem[ok] < f_non[ok]).double().mean()))
    return result, (torch.where(ok, f_mem, float("inf")), i_mem, i_non)


def save_pairs(path: str | Path, synth: torch.Tensor, members: torch.Tensor, non_members: torch.Tensor,
               closest: tuple[torch.Tensor, torch.Tensor, torch.Tensor], rows: int = 8) -> Path:
    """A PNG of the ``rows`` synthesized images nearest a member: each beside its nearest member and nearest non-member."""
    dist, i_mem, i_non = closest
    order = torch.argsort(dist)[:rows]
    order = order[torch.isfinite(dist[order])]
    tiles = [[synth[i], members[i_mem[i]], non_members[i_non[i]]] for i in order.tolist()]
    grid = sheet(tiles, row_labels=[f"{float(dist[i]):.2f}" for i in order.tolist()],
                 col_labels=[("synthesized", 1), ("nearest member", 1), ("nearest non-member", 1)], scale=readable_scale(synth.shape[-1]))
    return save_png(grid, path)
