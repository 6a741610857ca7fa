"""How the border of synthesized images differs from their interior, against real images: halos a crop can leave.

Run: python studies/edge_bias.py SET [SET ...] [--real FOLDER]

Each SET is a synthesis file (HDF5) or a folder of class folders of images. For every set it prints
how much brighter than the image's mean (0-255 scale) its corners (4x4 px patches), its 4 px border
band, and the top and bottom bands are, and the ratio of the mean gradient magnitude in the border
band to that in the interior. Real photographs set the scale: their tops are bright (sky), their
bottoms a little dark; a synthesized bright frame or corner halo shows against that.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sowmeta.data.image_sets import load_images

BAND = 4


def edge_bias(x: torch.Tensor) -> dict[str, float]:
    """Brightness above the image mean of the corners, border band, top and bottom bands; border/interior gradient ratio."""
    b = BAND
    grey = x.mean(dim=1)  # N x H x W
    mean = grey.mean(dim=(1, 2))
    band = torch.ones_like(grey[0], dtype=torch.bool)
    band[b:-b, b:-b] = False
    corners = torch.stack([grey[:, :b, :b], grey[:, :b, -b:], grey[:, -b:, :b], grey[:, -b:, -b:]]).mean(dim=(0, 2, 3))
    gy = (x[..., 1:, :-1] - x[..., :-1, :-1]).abs()
    gx = (x[..., :-1, 1:] - x[..., :-1, :-1]).abs()
    g = (gx + gy).mean(dim=1)  # N x (H-1) x (W-1)
    inner = torch.zeros_like(g[0], dtype=torch.bool)
    inner[b:-b, b:-b] = True
    return {
        "corners": float((corners - mean).mean()),
        "border": float((grey[:, band].mean(dim=1) - mean).mean()),
        "top": float((grey[:, :b].mean(dim=(1, 2)) - mean).mean()),
        "bottom": float((grey[:, -b:].mean(dim=(1, 2)) - mean).mean()),
        "gradient_ratio": float(g[:, ~inner].mean() / g[:, inner].mean()),
    }


def row(name: str, x: torch.Tensor) -> str:
    """One markdown table row of ``edge_bias``."""
    e = edge_bias(x)
    return f"| {name} | {len(x)} | {e['corners']:+.1f} | {e['border']:+.1f} | {e['top']:+.1f} | {e['bottom']:+.1f} | {e['gradient_ratio']:.2f} |"


HEADER = ("| set | images | corners above mean | border band | top band | bottom band | border / interior gradient |\n"
          "|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("--real", type=Path, help="a folder of real images to print first, for scale")
    args = ap.parse_args()
    print(HEADER)
    for path in ([args.real] if args.real else []) + args.sets:
        print(row(str(path), load_images(path)[0].float()))


if __name__ == "__main__":
    main()
