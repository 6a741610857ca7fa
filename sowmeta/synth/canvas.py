"""Jitter without wrap-around: the image is the centre of a larger canvas, and the model sees a random window of it.

DeepInversion's jitter rolls the image cyclically, so the rows that leave at the bottom come
back at the top: the model keeps seeing each edge of the image next to the opposite one. With
a canvas ``jitter`` px larger on every side, each step's window shows the image shifted by up to
``jitter`` px with real (optimized) pixels around it, never the opposite edge; the canvas's
margin is only ever seen at the window's edge and is dropped at the end (studies/cifar10-log.md, 7.12).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["Canvas"]


@dataclass(frozen=True)
class Canvas:
    """Where the image lies on the canvas being optimized: ``margin`` px on every side (0: the canvas is the image)."""

    margin: int
    height: int
    width: int

    @classmethod
    def around(cls, images: torch.Tensor, margin: int) -> Canvas:
        """The canvas for images of ``images``' size (B x C x H x W) with ``margin`` px on every side."""
        return cls.of_size(int(images.shape[-2]), int(images.shape[-1]), margin)

    @classmethod
    def of_size(cls, h: int, w: int, margin: int) -> Canvas:
        """The canvas for h x w images with ``margin`` px on every side (the mirrored margin must fit in the image)."""
        if margin >= min(h, w):
            raise ConfigError(
                f"jitter {margin} px without wrap-around needs images larger than that ({h} x {w} px); "
                "lower --jitter or use --jitter-wrap"
            )
        return cls(margin, h, w)

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """The initial canvas: the images, mirrored into the margin (their own pixels at its centre, exactly)."""
        m = self.margin
        return F.pad(images, (m, m, m, m), mode="reflect") if m else images

    def image(self, canvas: torch.Tensor) -> torch.Tensor:
        """The images: the canvas without its margin."""
        m = self.margin
        return canvas[..., m : m + self.height, m : m + self.width] if m else canvas

    def with_image(self, canvas: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The canvas with its centre replaced by ``images`` (differentiable in both)."""
        m = self.margin
        if not m:
            return images
        out = canvas.clone()
        out[..., m : m + self.height, m : m + self.width] = images
        return out

    def window(self, canvas: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """A window of the images' size, shifted from the centre by up to ``margin`` px each way (one shift for the batch)."""
        m = self.margin
        if not m:
            return canvas
        dy, dx = rng.randint(0, 2 * m), rng.randint(0, 2 * m)
        return canvas[..., dy : dy + self.height, dx : dx + self.width]
