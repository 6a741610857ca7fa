"""Mergeable per-class moments (count, mean, M2) in float64.

Each batch is reduced to per-image moments, which are folded into per-class moments with
Chan et al.'s parallel formula, vectorized over the classes present with a scatter-add. Merging
two partial results with the same formula makes the outcome independent of batch size,
batch order and the number of processes, up to float64 rounding.

Per-image moments come from ``dispatch.central_moments``: one pass over the feature map (E[x - s]
and E[(x - s)^2] per image and channel in float32 about a shift s estimated from a few positions of
each row, by whichever implementation the dispatch table picks), which keeps collection close to
the cost of plain inference; rows where the variance would still lose digits (the row's mean far
from s against its spread: about 0.02 % of rows) are recomputed exactly in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .dispatch import central_moments

__all__ = ["ClassMoments", "LabelGroups"]


def _group_sum(group: torch.Tensor, values: torch.Tensor, groups: int) -> torch.Tensor:
    """Rows of ``values`` summed by ``group`` (a scatter-add over classes, no Python loop).

    ``index_put_(accumulate=True)`` rather than ``index_add_``: on CPU, index_add_ opens an
    OpenMP parallel region even for a few rows, which costs tens of milliseconds per call when
    the cores are shared with other work; on CUDA it is deterministic (sorted, not atomic).
    """
    out = torch.zeros((groups, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_put_((group,), values, accumulate=True)


def _chan(
    n_a: torch.Tensor, mean_a: torch.Tensor, m2_a: torch.Tensor, n_b: torch.Tensor, mean_b: torch.Tensor, m2_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chan et al.'s merge of two (count, mean, M2) partial results; empty parts (count 0) are neutral."""
    n = n_a + n_b
    safe = n.clamp_min(1)
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / safe), m2_a + m2_b + delta.square() * (n_a * n_b / safe)


@dataclass(frozen=True)
class LabelGroups:
    """The classes present in a batch and which of them each image belongs to (shared by every tap)."""

    present: torch.Tensor  # int64 [G], sorted class indices
    group: torch.Tensor  # int64 [N], position of each image's class in ``present``
    images: torch.Tensor  # int64 [G], images per present class

    @classmethod
    def of(cls, labels: torch.Tensor, device: torch.device | str | None = None) -> LabelGroups:
        present, group = torch.unique(labels.to(device=device, dtype=torch.int64), return_inverse=True)
        images = _group_sum(group, torch.ones_like(group), present.numel())
        return cls(present, group, images)


@dataclass
class ClassMoments:
    """Per-class, per-channel element count, mean and M2 (sum of squared deviations).

    ``count`` holds elements (images x positions), ``images`` holds images per class.
    ``image_mean`` and ``image_m2`` are the same moments of the per-image means (one sample per
    image): how much a class's images differ from each other, apart from the spread inside each.
    """

    count: torch.Tensor  # float64 [K, C]
    mean: torch.Tensor  # float64 [K, C]
    m2: torch.Tensor  # float64 [K, C]
    images: torch.Tensor  # int64 [K]
    image_mean: torch.Tensor  # float64 [K, C]
    image_m2: torch.Tensor  # float64 [K, C]

    @classmethod
    def zeros(cls, num_classes: int, channels: int, device: torch.device | str = "cpu") -> ClassMoments:
        """Empty moments for ``num_classes`` classes and ``channels`` channels."""
        z = torch.zeros(num_classes, channels, dtype=torch.float64, device=device)
        return cls(z.clone(), z.clone(), z.clone(), torch.zeros(num_classes, dtype=torch.int64, device=device), z.clone(), z.clone())

    @property
    def num_classes(self) -> int:
        return self.mean.shape[0]

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    def update(self, x: torch.Tensor, labels: torch.Tensor | LabelGroups, *, axis: int = 1) -> None:
        """Fold a batch of features ``x`` (channels on ``axis``) with class ``labels`` [N] (or their groups) into the moments."""
        img = central_moments(x, axis)
        self.fold(img.mean, img.m2, img.positions, labels)

    def fold(self, img_mean: torch.Tensor, img_m2: torch.Tensor, positions: int | torch.Tensor, labels: torch.Tensor | LabelGroups) -> None:
        """Fold per-image moments (mean and M2 over ``positions`` positions, ``[N, C]`` float64) into the per-class moments.

        ``positions`` is one count for every channel, or a float64 ``[C]`` tensor of counts per
        channel (columns of several taps folded at once).
        """
        dev = self.mean.device
        img_mean, img_m2 = img_mean.to(dev), img_m2.to(dev)
        p = positions.to(dev) if isinstance(positions, torch.Tensor) else positions
        groups = labels if isinstance(labels, LabelGroups) else LabelGroups.of(labels, dev)
        # Only the classes present in the batch are touched: with 1000 classes most rows stay as they are.
        present, group, images_b = groups.present, groups.group, groups.images
        g = present.numel()
        n_b = images_b.to(torch.float64).unsqueeze(1) * p
        mean_b = _group_sum(group, img_mean, g) / images_b.unsqueeze(1)
        # Chan et al.: M2 of a union = sum of the parts' M2 + n_i * (mean_i - mean)^2.
        between = (img_mean - mean_b[group]).square_()
        m2_b = _group_sum(group, between * p + img_m2, g)
        n, mean, m2 = _chan(self.count[present], self.mean[present], self.m2[present], n_b, mean_b, m2_b)
        self.count[present], self.mean[present], self.m2[present] = n, mean, m2
        # the same merge one level up: one sample per image (mean_b is the mean of the images' means)
        k_a = self.images[present].to(torch.float64).unsqueeze(1).expand_as(mean_b)
        _, self.image_mean[present], self.image_m2[present] = _chan(
            k_a, self.image_mean[present], self.image_m2[present], images_b.to(torch.float64).unsqueeze(1).expand_as(mean_b), mean_b, _group_sum(group, between, g)
        )
        self.images[present] += images_b

    def columns(self, start: int, stop: int) -> ClassMoments:
        """Channels ``start:stop`` as moments of their own: views of these, sharing the image counts."""
        c = slice(start, stop)
        return ClassMoments(self.count[:, c], self.mean[:, c], self.m2[:, c], self.images, self.image_mean[:, c], self.image_m2[:, c])

    def clone(self) -> ClassMoments:
        """A copy that shares no storage with these moments."""
        return ClassMoments(*(t.clone() for t in (self.count, self.mean, self.m2, self.images, self.image_mean, self.image_m2)))

    def _merge_in(
        self, n_b: torch.Tensor, mean_b: torch.Tensor, m2_b: torch.Tensor, images_b: torch.Tensor, image_mean_b: torch.Tensor, image_m2_b: torch.Tensor
    ) -> None:
        k_a = self.images.to(torch.float64).unsqueeze(1).expand_as(self.mean)
        k_b = images_b.to(torch.float64).unsqueeze(1).expand_as(self.mean)
        _, self.image_mean, self.image_m2 = _chan(k_a, self.image_mean, self.image_m2, k_b, image_mean_b, image_m2_b)
        self.count, self.mean, self.m2 = _chan(self.count, self.mean, self.m2, n_b, mean_b, m2_b)
        self.images = self.images + images_b

    def merge(self, other: ClassMoments) -> ClassMoments:
        """Fold ``other`` (same classes and channels) into these moments, in place; returns self."""
        if other.mean.shape != self.mean.shape:
            raise ValueError(f"cannot merge moments of shape {tuple(other.mean.shape)} into {tuple(self.mean.shape)}")
        dev = self.mean.device
        self._merge_in(*(t.to(dev) for t in (other.count, other.mean, other.m2, other.images, other.image_mean, other.image_m2)))
        return self

    def var(self) -> torch.Tensor:
        """Population variance per class and channel (M2 / count); 0 for empty classes."""
        return self.m2 / self.count.clamp_min(1)

    def image_var(self) -> torch.Tensor:
        """Population variance of the per-image means per class and channel; 0 for empty classes."""
        return self.image_m2 / self.images.clamp_min(1).to(torch.float64).unsqueeze(1)

    def pooled(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class-independent (count, mean, var) per channel, merged over all classes."""
        total = self.count.sum(dim=0)
        safe = total.clamp_min(1)
        mean = (self.count * self.mean).sum(dim=0) / safe
        m2 = self.m2.sum(dim=0) + (self.count * (self.mean - mean).square()).sum(dim=0)
        return total, mean, m2 / safe

    def all_reduce(self) -> None:
        """Merge the moments of every rank of the default process group, in rank order, in place."""
        import torch.distributed as dist

        world = dist.get_world_size()
        packed = torch.stack([self.count, self.mean, self.m2, self.image_mean, self.image_m2]).contiguous()
        gathered = [torch.empty_like(packed) for _ in range(world)]
        dist.all_gather(gathered, packed)
        images = [torch.empty_like(self.images) for _ in range(world)]
        dist.all_gather(images, self.images.contiguous())
        k, c = self.mean.shape
        merged = ClassMoments.zeros(k, c, device=self.mean.device)
        for part, imgs in zip(gathered, images):
            merged._merge_in(part[0], part[1], part[2], imgs, part[3], part[4])
        self.count, self.mean, self.m2, self.images = merged.count, merged.mean, merged.m2, merged.images
        self.image_mean, self.image_m2 = merged.image_mean, merged.image_m2
