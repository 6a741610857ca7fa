"""The images as the statistics' data was stored: a differentiable JPEG encode-decode of the batch.

Statistics collected from JPEG files describe compressed images (blocking, ringing, blurred
chroma), and an image optimized to match them reproduces that compression, which networks
trained on lossless data recognise less often (studies/cifar10-log.md, 7.5). Matching the statistics
through the encoding instead, features of ``jpeg_view(x)`` against the recorded ones, lets the
compression come from the codec rather than the image ``x`` (``SynthConfig.jpeg_quality``; the
engine applies the CE to ``x`` itself). On CIFAR-10 at quality 75 this recovered at most half of
what lossless statistics give, within the study's noise (studies/cifar10-log.md, 7.6).

The codec is libjpeg's baseline path as Pillow runs it: JFIF YCbCr, box-averaged chroma for
4:2:0 / 4:2:2, 8x8 orthonormal DCT, the IJG tables at the given quality, and the triangle
("fancy") chroma upsampling, which is bilinear interpolation with half-pixel centres. Rounding
to the quantization step is exact, with the gradient of Shin & Song's (2017) approximation
``round(z) + (z - round(z))^3``. Images are padded to whole blocks by repeating edge pixels, as
libjpeg does. Left out: the codec's integer arithmetic and its rounding of YCbCr and RGB to
8 bits (a mean difference of about one level from Pillow's output at quality 75, against six
between the images and Pillow's; both networks of ``benchmarks/jpeg_cost.py`` score within
one point of Pillow's re-encoding on the view).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..data.jpeg_quality import ijg_tables

__all__ = ["SUBSAMPLINGS", "jpeg_view", "soft_round", "dct_blocks", "idct_blocks"]

SUBSAMPLINGS = {"4:4:4": (1, 1), "4:2:2": (1, 2), "4:2:0": (2, 2)}  # chroma (rows, columns) per sample
_TO_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_FROM_YCC = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def soft_round(z: torch.Tensor) -> torch.Tensor:
    """``round(z)`` with the gradient of ``round(z) + (z - round(z))^3``, 3 (z - round(z))^2."""
    r = torch.round(z).detach()
    cubic = (z - r) ** 3
    return r + (cubic - cubic.detach())


@functools.cache
def _codec(quality: int, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The codec's constants on ``device``, built once (synthesis calls the codec every step): the orthonormal
    8-point DCT-II (rows: frequencies, JPEG's FDCT in one dimension), the luminance and chrominance tables
    (8 x 8), and the RGB -> YCbCr and YCbCr -> RGB matrices."""
    k = torch.arange(8, dtype=torch.float64)
    dct = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5
    dct[0] /= math.sqrt(2)
    luma, chroma = (torch.tensor(t, dtype=torch.float64).view(8, 8) for t in ijg_tables(quality))
    to_ycc, from_ycc = (torch.tensor(m, dtype=torch.float64) for m in (_TO_YCC, _FROM_YCC))
    return tuple(t.to(device=device, dtype=dtype) for t in (dct, luma, chroma, to_ycc, from_ycc))


def dct_blocks(plane: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The 2-d DCT ``d`` of every 8x8 block of ``plane`` (B x C x H x W, H and W multiples of 8): B x C x H/8 x W/8 x 8 x 8."""
    b, c, h, w = plane.shape
    return torch.einsum("uy,bciyjx,vx->bcijuv", d, plane.reshape(b, c, h // 8, 8, w // 8, 8), d)


def idct_blocks(coef: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The inverse of ``dct_blocks``: the plane B x C x H x W again."""
    b, c, i, j = coef.shape[:4]
    return torch.einsum("uy,bcijuv,vx->bciyjx", d, coef, d).reshape(b, c, i * 8, j * 8)


def _quantize(plane: torch.Tensor, d: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Every 8x8 block of ``plane`` (B x C x H x W, H and W multiples of 8) through DCT ``d``, quantization by table ``q`` and IDCT."""
    return idct_blocks(soft_round(dct_blocks(plane, d) / q) * q, d)


def jpeg_view(images: torch.Tensor, quality: int, subsampling: str = "4:2:0") -> torch.Tensor:
    """``images`` (B x 3 x H x W in [0, 1]) encoded as JPEG at ``quality`` and decoded, differentiably; values in [0, 1]."""
    if not (isinstance(quality, int) and 1 <= quality <= 100):
        raise ConfigError(f"JPEG quality is an integer in 1-100, not {quality!r}")
    if subsampling not in SUBSAMPLINGS:
        raise ConfigError(f"JPEG chroma subsampling is one of {', '.join(SUBSAMPLINGS)}, not {subsampling!r}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ConfigError(f"jpeg_view takes RGB batches (B x 3 x H x W), not shape {tuple(images.shape)}")
    dct, luma, chroma, to_ycc, from_ycc = _codec(quality, str(images.device), images.dtype)
    sy, sx = SUBSAMPLINGS[subsampling]
    h, w = images.shape[-2:]
    mh, mw = 8 * sy, 8 * sx  # libjpeg's MCU: whole chroma blocks after subsampling
    pad_h, pad_w = -h % mh, -w % mw
    x = images * 255
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    ycc = torch.einsum("oc,bchw->bohw", to_ycc, x)
    y = _quantize(ycc[:, :1] - 128, dct, luma)
    c = ycc[:, 1:]  # Cb, Cr around 0 (JFIF adds 128 and the level shift takes it off again)
    if (sy, sx) != (1, 1):
        c = F.avg_pool2d(c, (sy, sx))
    c = _quantize(c, dct, chroma)
    if (sy, sx) != (1, 1):
        c = F.interpolate(c, scale_factor=(sy, sx), mode="bilinear", align_corners=False)
    rgb = torch.einsum("oc,bchw->bohw", from_ycc, torch.cat([y + 128, c], dim=1))
    return (rgb[..., :h, :w] / 255).clamp(0, 1)
