"""Image parameterizations (sowmeta/synth/param.py): the Fourier image against an independent numpy
rendering, its value range and gradients, exact starts from given images, and the pixel one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sowmeta.errors import ConfigError
from sowmeta.synth import SynthConfig
from sowmeta.synth.param import FourierParam, PixelParam, make_parameterization

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

# lucent's color_correlation_svd_sqrt, typed in again here
LUCENT_COLOR = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def _numpy_fourier_rgb(spectrum: np.ndarray, h: int, w: int) -> np.ndarray:
    """lucent's fft_image + to_valid_rgb(decorrelate=True), written with numpy: B x 3 x H x W in (0, 1)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    scale = 1.0 / np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / max(h, w))
    image = np.fft.irfft2((spectrum[..., 0] + 1j * spectrum[..., 1]) * scale, s=(h, w), norm="ortho") / 4.0
    color = LUCENT_COLOR / np.max(np.linalg.norm(LUCENT_COLOR, axis=0))
    rgb = np.einsum("ij,bjhw->bihw", color, image)
    return 1 / (1 + np.exp(-rgb))


def test_fourier_image_matches_lucents_rendering():
    init = MEAN + STD * torch.randn(2, 3, 8, 10)
    p = FourierParam(init, MEAN, STD, from_noise=True)
    with torch.no_grad():
        p.spectrum.normal_(0, 0.5)  # any point of the space, not only the start
    got = p.rgb().detach().numpy()
    np.testing.assert_allclose(got, _numpy_fourier_rgb(p.spectrum.detach().double().numpy(), 8, 10), atol=1e-5)
    np.testing.assert_allclose(((p.image() * STD) + MEAN).detach().numpy(), got, atol=1e-5)


def test_fourier_keeps_the_value_range_anywhere():
    p = FourierParam(torch.rand(3, 3, 16, 16), MEAN, STD, from_noise=False)
    with torch.no_grad():
        p.spectrum.normal_(0, 1e3)  # far outside anything an optimizer reaches
    rgb = p.rgb().detach()
    assert float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0
    lo, hi = -MEAN / STD, (1 - MEAN) / STD
    x = p.image().detach()
    assert bool((x >= lo - 1e-5).all() and (x <= hi + 1e-5).all())


def test_fourier_is_differentiable():
    init = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    p = FourierParam(init, MEAN.double(), STD.double(), from_noise=False)
    spectrum = p.spectrum.detach().clone().requires_grad_(True)

    def render(s: torch.Tensor) -> torch.Tensor:
        p.spectrum = s
        return p.image()

    assert torch.autograd.gradcheck(render, (spectrum,))
    p.spectrum = spectrum
    p.image().square().sum().backward()
    assert float(spectrum.grad.abs().sum()) > 0


def test_fourier_starts_exactly_from_given_images():
    """From images (seeds, sketches) the first image is the given one, black and white pixels included (in uint8)."""
    img = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8)
    img[:, :, :3] = 0
    img[:, :, -3:] = 255  # a sketch's black lines on white paper
    p = FourierParam(img.float() / 255, MEAN, STD, from_noise=False)
    back = (p.image().detach() * STD + MEAN).clamp(0, 1).mul(255).round().to(torch.uint8)
    assert torch.equal(back, img)


def test_fourier_from_noise_is_lucents_grey_start_and_follows_the_noise():
    noise = MEAN + STD * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = FourierParam(noise, MEAN, STD, from_noise=True).rgb().detach()
    b = FourierParam(noise.clone(), MEAN, STD, from_noise=True).rgb().detach()
    c = FourierParam(MEAN + STD * torch.randn(2, 3, 16, 16), MEAN, STD, from_noise=True).rgb().detach()
    assert torch.equal(a, b) and not torch.equal(a, c)  # the batch's seed decides its start
    assert float((a - 0.5).abs().max()) < 0.05  # lucent's spectrum std 0.01: nearly uniform grey


def test_pixel_param_is_the_clamped_normalized_image():
    init = torch.rand(2, 3, 5, 5) * 1.4 - 0.2  # noise reaches outside [0, 1]
    p = make_parameterization("pixel", init, MEAN, STD, from_noise=True)
    want = (init.clamp(0, 1) - MEAN) / STD
    torch.testing.assert_close(p.image().detach(), want)
    with torch.no_grad():
        p.x.add_(10.0)
    p.project()
    torch.testing.assert_close(p.image().detach(), (torch.ones_like(init) - MEAN) / STD)
    assert p.tensors() == [p.x] and isinstance(p, PixelParam)


def test_unknown_parameterization_is_refused_up_front():
    with pytest.raises(ConfigError, match="unknown image parameterization 'fouirer'; did you mean 'fourier'"):
        SynthConfig(param="fouirer")
