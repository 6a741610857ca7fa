"""How photograph-like an image set is at the pixel level: high-frequency power and total variation.

Synthesized images that score well with classifiers can still be a "DeepDream" texture: power
where photographs have little (real photographs' spectra fall off as about 1/f) and far larger
differences between neighbouring pixels. Two figures catch it, each compared with real images
of the same size:

- ``hf_fraction``: the share of an image's (mean-removed) luma power at radial frequencies above
  a quarter of the Nyquist frequency (0.125 cycles per pixel);
- ``tv_per_pixel``: the mean absolute difference between horizontally and between vertically
  adjacent pixels (summed over the two directions, averaged over channels; images in [0, 1]).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import DataError

__all__ = ["HIGH_FREQUENCY", "Naturalness", "NaturalnessScore", "hf_fraction", "tv_per_pixel", "naturalness", "compare_naturalness"]

HIGH_FREQUENCY = 0.125  # cycles per pixel: a quarter of the Nyquist frequency
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W images as float64 in [0, 1] (uint8 is scaled)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise DataError(f"images must be N x 3 x H x W (RGB), not {tuple(images.shape)}")
    return images.double() / 255 if images.dtype == torch.uint8 else images.double()


def hf_fraction(images: torch.Tensor, cutoff: float = HIGH_FREQUENCY) -> torch.Tensor:
    """Per image (N), the fraction of the mean-removed luma's spectral power above ``cutoff`` cycles per pixel.

    An image with no variation (all power at DC) scores 0.
    """
    x = _as_float(images)
    luma = sum(w * x[:, c] for c, w in enumerate(_LUMA))
    luma = luma - luma.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(luma).abs().square()
    h, w = luma.shape[-2:]
    radius = (torch.fft.fftfreq(h, dtype=torch.float64)[:, None].square() + torch.fft.fftfreq(w, dtype=torch.float64)[None, :].square()).sqrt()
    total = power.sum(dim=(-2, -1))
    high = (power * (radius > cutoff)).sum(dim=(-2, -1))
    return torch.where(total > 0, high / total.clamp_min(1e-300), torch.zeros_like(total))


def tv_per_pixel(images: torch.Tensor) -> torch.Tensor:
    """Per image (N), mean |horizontal difference| + mean |vertical difference| of adjacent pixels, channels averaged."""
    x = _as_float(images)
    across = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    down = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    return across + down


@dataclass
class Naturalness:
    """Mean high-frequency fraction and total variation per pixel of one image set."""

    images: int
    hf_fraction: float
    tv_per_pixel: float


@dataclass
class NaturalnessScore:
    """The set's figures, the real images' at the same size, and their ratios (1 = like the real images)."""

    data: Naturalness
    reference: Naturalness | None

    @property
    def hf_ratio(self) -> float | None:
        return None if self.reference is None or not self.reference.hf_fraction else self.data.hf_fraction / self.reference.hf_fraction

    @property
    def tv_ratio(self) -> float | None:
        return None if self.reference is None or not self.reference.tv_per_pixel else self.data.tv_per_pixel / self.reference.tv_per_pixel

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": asdict(self.data),
            "reference": None if self.reference is None else asdict(self.reference),
            "hf_ratio": self.hf_ratio,
            "tv_ratio": self.tv_ratio,
        }


def naturalness(batches: Any) -> Naturalness:
    """The figures of an image set given as an iterable of N x 3 x H x W batches (uint8 or float in [0, 1])."""
    count, hf, tv = 0, 0.0, 0.0
    for batch in batches:
        count += batch.shape[0]
        hf += float(hf_fraction(batch).sum())
        tv += float(tv_per_pixel(batch).sum())
    if not count:
        raise DataError("no images to measure")
    return Naturalness(count, hf / count, tv / count)


def compare_naturalness(data: Any, reference: Any | None = None) -> NaturalnessScore:
    """``naturalness`` of ``data`` and, when given, of ``reference`` (real images fitted to the same size)."""
    return NaturalnessScore(naturalness(data), None if reference is None else naturalness(reference))
