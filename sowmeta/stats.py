"""Mergeable per-class moments (count, mean, M2) in float64.

Each batch is reduced to exact per-image moments, which are folded into per-class moments
with Chan et al.'s parallel formula, vectorized over classes with ``index_add``. Merging
two partial results with the same formula makes the outcome independent of batch size,
batch order and the number of processes, up to float64 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ClassMoments", "channel_view"]

# Elements per float64 chunk when reducing a batch: bounds the temporary float64 copy.
_CHUNK_ELEMENTS = 1 << 24


def channel_view(x: torch.Tensor) -> torch.Tensor:
    """Reshape a feature map to [N, C, P]: channels on axis 1 (N x C for linear features)."""
    if x.dim() < 2:
        raise ValueError(f"a tapped feature needs a batch and a channel axis, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], x.shape[1], -1)


def _per_image_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and M2 over positions, per image and channel, in float64: ([N, C], [N, C], P)."""
    v = channel_view(x.detach())
    n, c, p = v.shape
    step = max(1, _CHUNK_ELEMENTS // max(1, c * p))
    means, m2s = [], []
    for start in range(0, n, step):
        # var_mean is a single-pass Welford reduction: one read of the float64 copy.
        var, mean = torch.var_mean(v[start : start + step].to(torch.float64), dim=2, correction=0)
        means.append(mean)
        m2s.append(var * p)
    return torch.cat(means), torch.cat(m2s), p


@dataclass
class ClassMoments:
    """Per-class, per-channel element count, mean and M2 (sum of squared deviations).

    ``count`` holds elements (images x positions), ``images`` holds images per class.
    """

    count: torch.Tensor  # float64 [K, C]
    mean: torch.Tensor  # float64 [K, C]
    m2: torch.Tensor  # float64 [K, C]
    images: torch.Tensor  # int64 [K]

    @classmethod
    def zeros(cls, num_classes: int, channels: int, device: torch.device | str = "cpu") -> ClassMoments:
        """Empty moments for ``num_classes`` classes and ``channels`` channels."""
        z = torch.zeros(num_classes, channels, dtype=torch.float64, device=device)
        return cls(z.clone(), z.clone(), z.clone(), torch.zeros(num_classes, dtype=torch.int64, device=device))

    @property
    def num_classes(self) -> int:
        return self.mean.shape[0]

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    def update(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold a batch of features ``x`` [N, C, ...] with class ``labels`` [N] into the moments."""
        labels = labels.to(device=x.device, dtype=torch.int64)
        img_mean, img_m2, p = _per_image_moments(x)
        img_mean, img_m2 = img_mean.to(self.mean.device), img_m2.to(self.mean.device)
        labels = labels.to(self.mean.device)
        k, c = self.mean.shape
        n_b = torch.zeros(k, dtype=torch.float64, device=self.mean.device)
        n_b.index_add_(0, labels, torch.full_like(labels, p, dtype=torch.float64))
        sum_b = torch.zeros(k, c, dtype=torch.float64, device=self.mean.device).index_add_(0, labels, img_mean * p)
        safe = n_b.clamp_min(1).unsqueeze(1)
        mean_b = sum_b / safe
        # Chan et al.: M2 of a union = sum of parts' M2 + n_i * (mean_i - mean)^2.
        dev = (img_mean - mean_b[labels]).square() * p
        m2_b = torch.zeros(k, c, dtype=torch.float64, device=self.mean.device).index_add_(0, labels, img_m2 + dev)
        images_b = torch.zeros(k, dtype=torch.int64, device=self.mean.device).index_add_(
            0, labels, torch.ones_like(labels)
        )
        self._merge_in(n_b.unsqueeze(1).expand(k, c), mean_b, m2_b, images_b)

    def _merge_in(self, n_b: torch.Tensor, mean_b: torch.Tensor, m2_b: torch.Tensor, images_b: torch.Tensor) -> None:
        n_a = self.count
        n = n_a + n_b
        safe = n.clamp_min(1)
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / safe)
        self.m2 = self.m2 + m2_b + delta.square() * (n_a * n_b / safe)
        self.count = n
        self.images = self.images + images_b

    def merge(self, other: ClassMoments) -> ClassMoments:
        """Fold ``other`` (same classes and channels) into these moments, in place; returns self."""
        if other.mean.shape != self.mean.shape:
            raise ValueError(f"cannot merge moments of shape {tuple(other.mean.shape)} into {tuple(self.mean.shape)}")
        self._merge_in(
            other.count.to(self.mean.device),
            other.mean.to(self.mean.device),
            other.m2.to(self.mean.device),
            other.images.to(self.mean.device),
        )
        return self

    def var(self) -> torch.Tensor:
        """Population variance per class and channel (M2 / count); 0 for empty classes."""
        return self.m2 / self.count.clamp_min(1)

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
        packed = torch.stack([self.count, self.mean, self.m2]).contiguous()
        gathered = [torch.empty_like(packed) for _ in range(world)]
        dist.all_gather(gathered, packed)
        images = [torch.empty_like(self.images) for _ in range(world)]
        dist.all_gather(images, self.images.contiguous())
        k, c = self.mean.shape
        merged = ClassMoments.zeros(k, c, device=self.mean.device)
        for part, imgs in zip(gathered, images):
            merged._merge_in(part[0], part[1], part[2], imgs)
        self.count, self.mean, self.m2, self.images = merged.count, merged.mean, merged.m2, merged.images
