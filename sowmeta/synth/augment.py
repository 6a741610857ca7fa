"""Random jitter, flip and the low-resolution phase applied to the image before each forward pass.

Randomness comes from a per-batch ``random.Random`` so that a batch's result depends only on
the run's seed and the batch's index (what makes resumed and sharded runs reproducible).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

__all__ = ["augment"]


def augment(x: torch.Tensor, rng: random.Random, *, jitter: int, flip: bool, low_res: bool) -> torch.Tensor:
    """Shift the batch by up to ``jitter`` pixels (cyclically), flip it with probability 1/2, and halve it if ``low_res``."""
    if low_res:
        x = F.avg_pool2d(x, 2)
        jitter = jitter // 2
    if jitter > 0:
        dy, dx = rng.randint(-jitter, jitter), rng.randint(-jitter, jitter)
        if dy or dx:
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flip and rng.random() < 0.5:
        x = torch.flip(x, dims=(3,))
    return x
