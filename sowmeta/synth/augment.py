"""What the model sees of the image at each step: a randomly zoomed, shifted, flipped, colour-shifted copy.

Random jitter and flips are DeepInversion's; the random-resized crop ("zoom") and the colour
shift are Plug-In Inversion's (Ghiasi et al. 2022), which make an image recognisable from
more than one exact view and so push it toward what other networks recognise too. Every
transform maps the valid pixel range into itself (the crop samples the image bilinearly,
the colour shift is an affine map of [0, 1] into [0, 1]), so the model never sees pixel values
a real image cannot have, and every one is differentiable in the image.

Randomness comes from a per-batch ``random.Random`` so that a batch's result depends only on
the run's seed and the batch's index (what makes resumed and sharded runs reproducible); a
transform that is off draws nothing, so turning a new one on leaves the others' draws alone.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["augment", "zoom", "color_shift"]


def zoom(x: torch.Tensor, rng: random.Random, amount: float) -> torch.Tensor:
    """A random square crop of each image, its side in [1 - amount, 1] of the image's, resized back (bilinear).

    The crop lies inside the image and samples clamp to the border pixels, so every output
    pixel is a convex combination of input pixels of its channel.
    """
    if amount <= 0:
        return x
    b = x.shape[0]
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    params = []
    for _ in range(b):
        side = 1.0 - amount * rng.random()
        room = 1.0 - side  # the crop's centre may move this far from the image's (normalized coordinates)
        params.append((side, room * (2 * rng.random() - 1), room * (2 * rng.random() - 1)))
    p = torch.tensor(params, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = p[:, 0]
    theta[:, 1, 1] = p[:, 0]
    theta[:, 0, 2] = p[:, 1]
    theta[:, 1, 2] = p[:, 2]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_shift(x: torch.Tensor, rng: random.Random, amount: float, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Per image and channel, an affine map of the range [lo, hi] into itself: contrast k in [1 - amount, 1], offset within the room left.

    In [0, 1] units: u -> o + k u with o uniform in [0, 1 - k], so a channel's mean moves by up to
    ``amount`` / 2 either way and its spread shrinks by up to ``amount``. ``lo``/``hi`` (1 x 3 x 1 x 1)
    are the normalized values of 0 and 1.
    """
    if amount <= 0:
        return x
    b, c = x.shape[:2]
    k = [1.0 - amount * rng.random() for _ in range(b * c)]
    o = [(1.0 - kk) * rng.random() for kk in k]
    k_t = torch.tensor(k, dtype=x.dtype, device=x.device).view(b, c, 1, 1)
    o_t = torch.tensor(o, dtype=x.dtype, device=x.device).view(b, c, 1, 1)
    return lo + (hi - lo) * o_t + k_t * (x - lo)


def augment(
    x: torch.Tensor,
    rng: random.Random,
    *,
    jitter: int,
    flip: bool,
    low_res: bool,
    zoom_amount: float = 0.0,
    color: float = 0.0,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
) -> torch.Tensor:
    """Zoom into the batch (``zoom_amount``), halve it if ``low_res``, shift it by up to ``jitter`` pixels
    (cyclically), flip it with probability 1/2, and shift its colours (``color``; needs the range ``lo``/``hi``)."""
    x = zoom(x, rng, zoom_amount)
    if low_res:
        x = F.avg_pool2d(x, 2)
        jitter = jitter // 2
    if jitter > 0:
        dy, dx = rng.randint(-jitter, jitter), rng.randint(-jitter, jitter)
        if dy or dx:
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flip and rng.random() < 0.5:
        x = torch.flip(x, dims=(3,))
    if color > 0:
        if lo is None or hi is None:
            raise ConfigError("the colour shift needs the value range: pass lo and hi")
        x = color_shift(x, rng, color, lo, hi)
    return x
