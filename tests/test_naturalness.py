"""hf_fraction and tv_per_pixel against closed forms and an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sowmeta.errors import DataError
from sowmeta.evaluation.naturalness import compare_naturalness, hf_fraction, naturalness, tv_per_pixel


def _gray(pattern: np.ndarray) -> torch.Tensor:
    """One gray image (all channels equal) from an H x W array."""
    return torch.from_numpy(np.repeat(pattern[None, None], 3, axis=1))


def _cosine(size: int, cycles_per_pixel: float) -> np.ndarray:
    x = np.arange(size)
    return np.tile(0.5 + 0.25 * np.cos(2 * np.pi * cycles_per_pixel * x), (size, 1))


@pytest.mark.parametrize("freq,expected", [(1 / 16, 0.0), (1 / 4, 1.0), (3 / 8, 1.0), (1 / 32, 0.0)])
def test_a_single_frequency_is_all_low_or_all_high(freq, expected):
    assert float(hf_fraction(_gray(_cosine(64, freq)))) == pytest.approx(expected, abs=1e-12)


def test_two_frequencies_split_by_their_power():
    x = np.arange(64)
    low, high = 0.3 * np.cos(2 * np.pi * x / 16), 0.1 * np.cos(2 * np.pi * x / 4)
    image = np.tile(0.5 + low + high, (64, 1))
    assert float(hf_fraction(_gray(image))) == pytest.approx(0.1**2 / (0.1**2 + 0.3**2), rel=1e-9)


def test_random_images_match_numpy():
    rng = np.random.default_rng(0)
    images = rng.random((3, 3, 40, 56))
    luma = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    luma -= luma.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(luma)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(40), np.fft.fftfreq(56), indexing="ij")
    expected = (power * (np.hypot(fy, fx) > 0.125)).sum(axis=(1, 2)) / power.sum(axis=(1, 2))
    np.testing.assert_allclose(hf_fraction(torch.from_numpy(images)).numpy(), expected, rtol=1e-10)
    tv = np.abs(np.diff(images, axis=3)).mean(axis=(1, 2, 3)) + np.abs(np.diff(images, axis=2)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(tv_per_pixel(torch.from_numpy(images)).numpy(), tv, rtol=1e-12)


def test_flat_image_scores_zero():
    flat = torch.full((2, 3, 8, 8), 0.4)
    assert hf_fraction(flat).tolist() == [0.0, 0.0] and tv_per_pixel(flat).tolist() == [0.0, 0.0]


def test_total_variation_closed_forms_and_uint8_scale():
    checker = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.float64)
    assert float(tv_per_pixel(_gray(checker))) == pytest.approx(2.0)
    assert float(tv_per_pixel(_gray((checker * 255).astype(np.uint8)))) == pytest.approx(2.0)
    ramp = np.tile(np.linspace(0, 1, 11), (5, 1))
    assert float(tv_per_pixel(_gray(ramp))) == pytest.approx(0.1)


def test_set_figures_are_image_means_and_ratios_compare_with_the_reference():
    rough = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    smooth = torch.nn.functional.avg_pool2d(rough, 3, stride=1, padding=1)
    whole = naturalness([rough])
    split = naturalness([rough[:1], rough[1:]])
    assert split.images == 4 and split.hf_fraction == pytest.approx(whole.hf_fraction) and split.tv_per_pixel == pytest.approx(whole.tv_per_pixel)
    score = compare_naturalness([rough], [smooth])
    assert score.hf_ratio > 1 and score.tv_ratio > 1
    assert score.hf_ratio == pytest.approx(whole.hf_fraction / naturalness([smooth]).hf_fraction)
    assert compare_naturalness([rough]).hf_ratio is None


def test_bad_shapes_and_empty_sets_are_refused():
    with pytest.raises(DataError, match="N x 3 x H x W"):
        hf_fraction(torch.zeros(3, 8, 8))
    with pytest.raises(DataError, match="no images"):
        naturalness([])
