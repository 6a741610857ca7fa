"""The demo's dataset: each class has its own object shape AND its own typical background.

Because every class lives on its own background (sky, grass, water, night), the paper's
"background problem" becomes measurable: global statistics (DeepInversion) blend the
backgrounds of all classes, class-conditional statistics keep each class's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["DEMO_CLASSES", "DemoClass", "make_demo_images", "make_demo_scenes", "make_demo_outlines", "border_stats"]


@dataclass(frozen=True)
class DemoClass:
    name: str
    shape: str
    background: tuple[float, float, float]  # RGB in [0, 1]
    texture: str


DEMO_CLASSES = (
    DemoClass("sun", "disk", (0.35, 0.6, 0.95), "gradient"),
    DemoClass("tree", "triangle", (0.25, 0.55, 0.2), "noise"),
    DemoClass("boat", "square", (0.1, 0.25, 0.5), "stripes"),
    DemoClass("star", "cross", (0.08, 0.06, 0.15), "speckle"),
)


def _background(cls: DemoClass, n: int, size: int, g: torch.Generator) -> torch.Tensor:
    base = torch.tensor(cls.background).view(1, 3, 1, 1).expand(n, 3, size, size).clone()
    base += (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 0.1  # per-image tint
    yy = torch.linspace(0, 1, size).view(1, 1, size, 1)
    if cls.texture == "gradient":
        base = base + 0.25 * (0.5 - yy)
    elif cls.texture == "noise":
        base = base + 0.12 * torch.randn(n, 1, size, size, generator=g)
    elif cls.texture == "stripes":
        phase = torch.rand(n, 1, 1, 1, generator=g) * 2 * math.pi
        base = base + 0.12 * torch.sin(yy * size * 1.2 + phase)
    elif cls.texture == "speckle":
        base = base + 0.8 * (torch.rand(n, 1, size, size, generator=g) > 0.97).float()
    return base


def _mask(shape: str, n: int, size: int, g: torch.Generator) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    cy = size / 2 + (torch.rand(n, 1, 1, generator=g) - 0.5) * size * 0.25
    cx = size / 2 + (torch.rand(n, 1, 1, generator=g) - 0.5) * size * 0.25
    r = size * (0.2 + 0.08 * torch.rand(n, 1, 1, generator=g))
    dy, dx = yy - cy, xx - cx
    if shape == "disk":
        m = dy.square() + dx.square() <= r.square()
    elif shape == "square":
        m = (dy.abs() <= r * 0.85) & (dx.abs() <= r * 0.85)
    elif shape == "triangle":
        m = (dy <= r * 0.8) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.6)
    else:  # cross
        w = r * 0.3
        m = ((dy.abs() <= w) & (dx.abs() <= r)) | ((dx.abs() <= w) & (dy.abs() <= r))
    return m.float().unsqueeze(1)


def make_demo_images(per_class: int, *, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] (N x 3 x size x size) and labels, ``per_class`` of each demo class."""
    images, labels, _ = make_demo_scenes(per_class, size=size, seed=seed)
    return images, labels


def make_demo_scenes(per_class: int, *, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``make_demo_images``' images and labels, and where each image's object is (N x size x size, bool)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys, ms = [], [], []
    for k, cls in enumerate(DEMO_CLASSES):
        bg = _background(cls, per_class, size, g)
        mask = _mask(cls.shape, per_class, size, g)
        colour = 0.55 + 0.45 * torch.rand(per_class, 3, 1, 1, generator=g)  # bright object, random hue
        xs.append((bg * (1 - mask) + colour * mask).clamp(0, 1))
        ys.append(torch.full((per_class,), k, dtype=torch.long))
        ms.append(mask.squeeze(1) > 0)
    return torch.cat(xs), torch.cat(ys), torch.cat(ms)


def make_demo_outlines(per_class: int, *, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each class's shape drawn as a black outline on white (uint8 N x 3 x size x size), its labels, and the filled shapes (N x size x size).

    What a person would sketch: the shape of the class, nothing of its background or colours.
    """
    from ..synth.sketch import outline, to_sketch

    g = torch.Generator().manual_seed(seed)
    masks = torch.cat([_mask(cls.shape, per_class, size, g) for cls in DEMO_CLASSES]).squeeze(1) > 0
    labels = torch.arange(len(DEMO_CLASSES)).repeat_interleave(per_class)
    return to_sketch(outline(masks)), labels, masks


def border_stats(images: torch.Tensor, width: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image RGB mean and std of the border frame (where the background is), images in [0, 1]."""
    n, c, h, w = images.shape
    frame = torch.ones(h, w, dtype=torch.bool)
    frame[width : h - width, width : w - width] = False
    pix = images[:, :, frame]  # N x 3 x P
    return pix.mean(dim=2), pix.std(dim=2)
