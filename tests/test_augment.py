"""The views the model sees (sowmeta/synth/augment.py): zoom and colour shift against independent
numpy computations, their value range and their gradients."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sowmeta.synth.augment import augment, color_shift, zoom

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
LO, HI = -MEAN / STD, (1 - MEAN) / STD


class Fixed(random.Random):
    """A ``random.Random`` whose ``random()`` returns the given values in turn (to know what was drawn)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def _bilinear_crop(img: np.ndarray, side: float, cy: float, cx: float) -> np.ndarray:
    """Crop of side ``side`` (fraction of the image) centred at (cy, cx) (in [-1, 1] units), resized back:
    each output pixel centre mapped into the input and interpolated bilinearly, clamped to the border."""
    c, h, w = img.shape
    out = np.empty_like(img)
    for i in range(h):
        for j in range(w):
            y = ((side * ((2 * i + 1) / h - 1) + cy + 1) * h - 1) / 2  # input pixel coordinates
            x = ((side * ((2 * j + 1) / w - 1) + cx + 1) * w - 1) / 2
            y, x = min(max(y, 0), h - 1), min(max(x, 0), w - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[:, i, j] = (
                img[:, y0, x0] * (1 - fy) * (1 - fx) + img[:, y0, x1] * (1 - fy) * fx + img[:, y1, x0] * fy * (1 - fx) + img[:, y1, x1] * fy * fx
            )
    return out


def test_zoom_is_a_bilinear_crop_of_the_drawn_size_and_place():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    # image 0: side 1 - 0.5 * 0.5 = 0.75, centre at 0.25 * (2 * 0.9 - 1) = 0.2 (x), 0.25 * (2 * 0.1 - 1) = -0.2 (y)
    # image 1: side 1 - 0.5 * 1.0 = 0.5, centred
    rng = Fixed([0.5, 0.9, 0.1, 1.0, 0.5, 0.5])
    got = zoom(x, rng, 0.5).numpy()
    np.testing.assert_allclose(got[0], _bilinear_crop(x[0].numpy(), 0.75, -0.2, 0.2), atol=1e-9)
    np.testing.assert_allclose(got[1], _bilinear_crop(x[1].numpy(), 0.5, 0.0, 0.0), atol=1e-9)


def test_color_shift_is_an_affine_map_of_the_range_into_itself():
    x01 = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    x = (x01 - MEAN.double()) / STD.double()
    # per channel: contrast k = 1 - 0.4 r1, offset o = (1 - k) r2
    draws = [0.5, 1.0, 0.0, 0.25, 1.0, 0.5]  # k: 0.8, 0.6, 1.0; then the offsets' fractions
    rng = Fixed(draws)
    got = color_shift(x, rng, 0.4, LO.double(), HI.double())
    k = np.array([0.8, 0.6, 1.0])
    o = (1 - k) * np.array([0.25, 1.0, 0.5])
    want01 = o[:, None, None] + k[:, None, None] * x01[0].numpy()
    np.testing.assert_allclose((got * STD.double() + MEAN.double())[0].numpy(), want01, atol=1e-12)


@pytest.mark.parametrize("kind", ["zoom", "color", "all"])
def test_augmentations_keep_the_value_range(kind: str):
    """Images that touch both ends of the range stay inside it, whatever is drawn."""
    x01 = torch.rand(16, 3, 16, 16)
    x01[:, :, 0, 0], x01[:, :, -1, -1] = 0.0, 1.0
    x = (x01 - MEAN) / STD
    for seed in range(5):
        rng = random.Random(seed)
        if kind == "zoom":
            y = zoom(x, rng, 0.9)
        elif kind == "color":
            y = color_shift(x, rng, 0.9, LO, HI)
        else:
            y = augment(x, rng, jitter=2, flip=True, low_res=seed % 2 == 0, zoom_amount=0.6, color=0.6, lo=LO, hi=HI)
        y01 = y * STD + MEAN
        assert float(y01.min()) >= -1e-6 and float(y01.max()) <= 1 + 1e-6
        if kind == "zoom":  # each output pixel is a convex combination of its image's pixels of that channel
            assert (y.amin(dim=(2, 3)) >= x.amin(dim=(2, 3)) - 1e-6).all() and (y.amax(dim=(2, 3)) <= x.amax(dim=(2, 3)) + 1e-6).all()


@pytest.mark.parametrize("kind", ["zoom", "color"])
def test_augmentations_are_differentiable(kind: str):
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)

    def f(t: torch.Tensor) -> torch.Tensor:
        rng = random.Random(3)  # the same draws at every call
        return zoom(t, rng, 0.5) if kind == "zoom" else color_shift(t, rng, 0.5, LO.double(), HI.double())

    assert torch.autograd.gradcheck(f, (x,))
    f(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_off_draws_nothing():
    """Turning zoom and colour shift off leaves jitter and flips exactly as before (the same random draws)."""
    x = torch.rand(2, 3, 8, 8)
    a = augment(x, random.Random(5), jitter=2, flip=True, low_res=False)
    b = augment(x, random.Random(5), jitter=2, flip=True, low_res=False, zoom_amount=0.0, color=0.0, lo=LO, hi=HI)
    assert torch.equal(a, b)
    assert zoom(x, random.Random(0), 0.0) is x and color_shift(x, random.Random(0), 0.0, LO, HI) is x
