"""What a synthesis run reports while it works (``SynthProgress``) and what it produced (``SynthResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import SynthConfig
from .engine import IterationInfo

__all__ = ["SynthProgress", "SynthResult"]


@dataclass
class SynthProgress:
    """Where a run stands: batch ``batch`` of ``batches`` (this rank's), and its current iteration."""

    batch: int
    batches: int
    images_done: int
    images_total: int
    iteration: IterationInfo | None = None
    resumed: int = 0


@dataclass
class SynthResult:
    """What a run produced: the file (or, without ``out``, the images in memory) and the teacher's verdict."""

    path: Path | None
    labels: torch.Tensor
    prediction: torch.Tensor
    confidence: torch.Tensor
    class_labels: list[str]
    config: SynthConfig
    seconds: float
    resumed_batches: int = 0
    uint8: torch.Tensor | None = field(default=None, repr=False)  # N x 3 x H x W when held in memory

    @property
    def teacher_accuracy(self) -> float:
        """Fraction of images the teacher classifies as their target class."""
        return float((self.prediction == self.labels).double().mean())

    @property
    def chance(self) -> float:
        """Top-1 a guess would reach: one over the number of classes."""
        return 1.0 / max(1, len(self.class_labels))

    @property
    def failed(self) -> bool:
        """True when the teacher recognises the images no better than chance: the run did not work."""
        return self.teacher_accuracy <= self.chance and len(self.class_labels) > 1

    def images(self) -> torch.Tensor:
        """All images as float in [0, 1], N x 3 x H x W (read from the file when written to one)."""
        if self.uint8 is None:
            import h5py

            with h5py.File(self.path, "r") as f:
                self.uint8 = torch.from_numpy(np.asarray(f["images"][:])).permute(0, 3, 1, 2).contiguous()
        return self.uint8.float() / 255
