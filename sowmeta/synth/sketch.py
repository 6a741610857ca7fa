"""Sketches from images, and how faithfully an image follows a sketch (paper Sec. 4.2, sketch-based synthesis).

A sketch here is black lines on white paper, the image a person would draw: the strongest
Sobel edges of a photograph (``edge_sketch``), or the outline of a filled shape
(``outline``). Faithfulness (``edge_overlap``) is the fraction of the sketch's edges that lie
within ``tolerance`` pixels of an edge of the image, both found by the same Sobel filter, the
image's being its strongest Sobel responses, as many as the sketch has edge pixels (so an image
cannot score by being all edges). An image unrelated to the sketch scores about the chance
that a pixel lies near one of its edges; one that reproduces the sketch's lines scores 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DataError

__all__ = ["sobel_magnitude", "edge_mask", "edge_sketch", "outline", "to_sketch", "sketch_edges", "shade_enclosed", "edge_overlap"]

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_LUMA = (0.299, 0.587, 0.114)
_STEP = 4.0  # the Sobel magnitude at a black-to-white step edge


def _float(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise DataError(f"images must be N x 3 x H x W, not {tuple(images.shape)}")
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def sobel_magnitude(images: torch.Tensor) -> torch.Tensor:
    """|Sobel gradient| of each image's luma (N x 3 x H x W, uint8 or [0, 1]) -> N x H x W; borders replicated."""
    x = _float(images)
    luma = sum(w * x[:, c] for c, w in enumerate(_LUMA)).unsqueeze(1)  # type: ignore[union-attr]
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.T]).unsqueeze(1).to(luma)
    g = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.square().sum(dim=1).sqrt()


def edge_mask(images: torch.Tensor, *, density: float) -> torch.Tensor:
    """The ``density`` fraction of each image's pixels with the strongest Sobel response (N x H x W, bool)."""
    if not 0 < density < 1:
        raise DataError(f"edge density is a fraction in (0, 1), not {density}")
    mag = sobel_magnitude(images).flatten(1)
    k = max(1, round(density * mag.shape[1]))
    return _top(mag, torch.full((mag.shape[0],), k)).view(-1, *images.shape[-2:])


def _top(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per row of N x P ``values``, a mask of its ``counts[i]`` largest entries (ties broken by position)."""
    order = values.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(values.shape[1]).expand_as(order).contiguous())
    return ranks < counts[:, None]


def to_sketch(lines: torch.Tensor) -> torch.Tensor:
    """Line masks (N x H x W, bool) drawn black on white: uint8 N x 3 x H x W."""
    return (~lines).to(torch.uint8).mul(255).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def edge_sketch(images: torch.Tensor, *, density: float = 0.15) -> torch.Tensor:
    """A sketch of each image: its strongest Sobel edges (``density`` of the pixels) in black on white (uint8)."""
    return to_sketch(edge_mask(images, density=density))


def outline(masks: torch.Tensor) -> torch.Tensor:
    """The boundary of filled shapes (N x H x W, bool): shape pixels with a 4-neighbour outside the shape (or the image)."""
    m = F.pad(masks.bool(), (1, 1, 1, 1), value=False)
    inner = m[:, 1:-1, 1:-1] & m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:]
    return masks.bool() & ~inner


def sketch_edges(sketches: torch.Tensor) -> torch.Tensor:
    """Where a sketch's lines have edges: Sobel magnitude of at least a quarter of a black-to-white step (N x H x W, bool)."""
    return sobel_magnitude(sketches) >= _STEP / 4


def shade_enclosed(sketches: torch.Tensor, *, shade: float | None = 0.5, ground: float | None = None) -> torch.Tensor:
    """Sketches (uint8 N x 3 x H x W, dark lines on white) with the paper inside closed lines set to grey ``shade``
    and the paper outside them to grey ``ground`` (levels in [0, 1]; None leaves that part white).

    An outline tells a person where the object is; to the network it is a thin line with the same
    white on both sides. Giving what the lines enclose (the white pixels that cannot reach the
    border without crossing a line: a flood fill from the border, 4-connected) and what lies
    around them different tones lets the synthesis put the object inside and the background
    around it. Lines and open drawings are left as they are.
    """
    for name, level in (("shade", shade), ("ground", ground)):
        if level is not None and not 0 <= level <= 1:
            raise DataError(f"{name} is a grey level in [0, 1], not {level}")
    x = _float(sketches)
    paper = x.min(dim=1).values > 0.5  # N x H x W: white enough to be paper, not line
    outside = torch.zeros_like(paper)
    outside[:, 0, :], outside[:, -1, :], outside[:, :, 0], outside[:, :, -1] = paper[:, 0, :], paper[:, -1, :], paper[:, :, 0], paper[:, :, -1]
    while True:  # grow from the border through paper pixels until nothing changes (at most H * W steps)
        m = F.pad(outside, (1, 1, 1, 1))
        grown = paper & (outside | m[:, :-2, 1:-1] | m[:, 2:, 1:-1] | m[:, 1:-1, :-2] | m[:, 1:-1, 2:])
        if torch.equal(grown, outside):
            break
        outside = grown
    out = x
    for region, level in ((paper & ~outside, shade), (outside, ground)):
        if level is not None:
            out = torch.where(region.unsqueeze(1), torch.full_like(x, level), out)
    return (out * 255).round().to(torch.uint8) if sketches.dtype == torch.uint8 else out


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return mask
    return F.max_pool2d(mask.float().unsqueeze(1), 2 * radius + 1, stride=1, padding=radius).squeeze(1) > 0


def edge_overlap(sketches: torch.Tensor, images: torch.Tensor, *, tolerance: int = 1) -> torch.Tensor:
    """Per pair: the fraction of the sketch's edges within ``tolerance`` px of the image's edges (N values in [0, 1]).

    Both edge maps come from the same Sobel filter: the sketch's are ``sketch_edges``, the image's
    its strongest Sobel pixels, as many as the sketch has edge pixels. NaN for a blank sketch.
    """
    if sketches.shape[0] != images.shape[0] or sketches.shape[-2:] != images.shape[-2:]:
        raise DataError(f"sketches {tuple(sketches.shape)} and images {tuple(images.shape)} do not pair up")
    lines = sketch_edges(sketches)
    counts = lines.flatten(1).sum(dim=1)
    edges = _top(sobel_magnitude(images).flatten(1), counts).view_as(lines)
    hit = (lines & _dilate(edges, tolerance)).flatten(1).sum(dim=1)
    return hit.float() / counts.float()
