"""How the optimized images are parameterized: raw pixels, or a decorrelated-colour Fourier spectrum.

The engine optimizes ``Parameterization.tensors()`` and reads the batch back with ``image()``,
in the model's normalized input space and always inside the valid pixel range. ``pixel`` is
the paper's (and DeepInversion's) choice: the normalized pixels themselves, clamped to
[0, 1] after every step. ``fourier`` is the feature-visualization one (Olah et al. 2017;
lucent's ``fft_image`` + ``to_valid_rgb``): a spectrum scaled by 1/frequency, decorrelated
colours, and a sigmoid that keeps every pixel inside (0, 1) without clamping, so that Adam's
steps are roughly whitened over frequencies and colours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from ..named import Registry

__all__ = [
    "Parameterization",
    "PixelParam",
    "FourierParam",
    "PARAMETERIZATIONS",
    "register_parameterization",
    "get_parameterization",
    "make_parameterization",
]


class Parameterization(Protocol):
    """What the engine needs of an image parameterization."""

    def tensors(self) -> list[torch.Tensor]:
        """The leaf tensors the optimizer updates."""
        ...

    def image(self) -> torch.Tensor:
        """The batch in the model's normalized input space (B x 3 x H x W), differentiable, inside the valid range."""
        ...

    def project(self) -> None:
        """Restore the constraints after an optimizer step (pixel: clamp to the valid range)."""
        ...


# factory(init, mean, std, *, from_noise, channels_last) -> Parameterization. ``init`` holds the
# starting images in [0, 1]-scale (noise with the data's mean and std, or seed images/sketches),
# ``mean``/``std`` (1 x 3 x 1 x 1) map [0, 1] images to the model's input; ``from_noise`` says
# the init is random noise, which a parameterization may read as a random seed of its own space.
ParamFactory = Callable[..., Parameterization]
PARAMETERIZATIONS: Registry[ParamFactory] = Registry("image parameterization")


def register_parameterization(name: str, *, replace: bool = False) -> Callable[[ParamFactory], ParamFactory]:
    """Register a parameterization factory under ``name`` (``SynthConfig(param=name)``, ``--param``)."""
    return PARAMETERIZATIONS.register(name, replace=replace)


def get_parameterization(name: str) -> ParamFactory:
    """The factory registered under ``name`` (``ConfigError`` with a did-you-mean otherwise)."""
    return PARAMETERIZATIONS.get(name)


def make_parameterization(
    name: str, init: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, from_noise: bool, channels_last: bool = False
) -> Parameterization:
    """The parameterization ``name`` starting from ``init`` (B x 3 x H x W in [0, 1]-scale, on the target device)."""
    return get_parameterization(name)(init, mean, std, from_noise=from_noise, channels_last=channels_last)


class PixelParam:
    """The normalized pixels themselves; ``project`` clamps them to the image range [0, 1] (in normalized units)."""

    def __init__(self, init: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, from_noise: bool = True, channels_last: bool = False) -> None:
        self.lo, self.hi = -mean / std, (1 - mean) / std
        x = ((init - mean) / std).clamp(self.lo, self.hi)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.x = x.requires_grad_(True)

    def tensors(self) -> list[torch.Tensor]:
        return [self.x]

    def image(self) -> torch.Tensor:
        return self.x

    @torch.no_grad()
    def project(self) -> None:
        torch.maximum(torch.minimum(self.x, self.hi), self.lo, out=self.x)


# lucent's colour correlation of ImageNet, square-rooted (its SVD), columns scaled to norm <= 1
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()
_MAGIC = 4.0  # lucent's spectrum-to-image scale: keeps the initial logits small
_EDGE = 1e-3  # initial images are clipped to [_EDGE, 1 - _EDGE] before the logit (0 and 1 have none)
_NOISE_SD = 0.01  # lucent's initial spectrum std, used when the init is noise


def _frequencies(h: int, w: int) -> torch.Tensor:
    """|f| of every coefficient of an ``rfft2`` of an h x w image (cycles per pixel)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return (fx.square() + fy.square()).sqrt()


class FourierParam:
    """lucent's ``fft_image`` with ``decorrelate=True``: image = sigmoid(C · irfft2(spectrum / |f|) / 4).

    ``C`` maps decorrelated colour channels to RGB. From noise the spectrum starts as lucent's
    (std 0.01, drawn from the init noise, so the batch's seed decides it); from images it is the
    exact inverse of the image (clipped to [1e-3, 1 - 1e-3]), so the run starts from that image.
    """

    def __init__(self, init: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, from_noise: bool = False, channels_last: bool = False,
                 decay: float = 1.0) -> None:
        b, c, h, w = init.shape
        self.size = (h, w)
        self.mean, self.std = mean, std
        self.scale = (1.0 / _frequencies(h, w).clamp_min(1.0 / max(h, w)) ** decay).to(init)[None, None]
        self.color = _COLOR.to(init)
        if from_noise:
            white = (init - mean) / std  # standard normal noise for the plan's noise init
            spectrum = _NOISE_SD * torch.fft.rfft2(white, norm="ortho")
        else:
            logits = torch.logit(init.clamp(_EDGE, 1 - _EDGE))
            decorrelated = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.color), logits)
            spectrum = torch.fft.rfft2(decorrelated * _MAGIC, norm="ortho") / self.scale
        self.spectrum = torch.view_as_real(spectrum).contiguous().requires_grad_(True)

    def tensors(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def rgb(self) -> torch.Tensor:
        """The images in [0, 1] (B x 3 x H x W)."""
        # scaling the real pair before view_as_complex and mixing colours as a 1x1 convolution: the same values,
        # 20x faster backward on a CPU at 224 px than a complex multiply and an einsum
        spectrum = torch.view_as_complex(self.spectrum * self.scale[..., None])
        decorrelated = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        return torch.sigmoid(F.conv2d(decorrelated, (self.color / _MAGIC)[:, :, None, None]))

    def image(self) -> torch.Tensor:
        return (self.rgb() - self.mean) / self.std

    def project(self) -> None:
        pass  # the sigmoid keeps every pixel in range


register_parameterization("pixel")(PixelParam)
register_parameterization("fourier")(FourierParam)
