"""Images out of a synthesis file: PNG folders per class and contact-sheet grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import atomic_dir, atomic_file
from ..outputs import PNG_MARKER, PNG_SOFTWARE
from ..synthdata import load_images, read_info

__all__ = ["contact_sheet", "save_contact_sheet", "save_png", "write_pngs"]


def contact_sheet(images: torch.Tensor, labels: torch.Tensor, *, classes: Sequence[int] | None = None, per_class: int = 8, pad: int = 2) -> torch.Tensor:
    """One row per class with its first ``per_class`` images (uint8 or float N x 3 x H x W) -> 3 x H' x W' float."""
    from torchvision.utils import make_grid

    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    classes = sorted({int(c) for c in labels.tolist()}) if classes is None else list(classes)
    blank = torch.ones_like(images[0])
    tiles = []
    for k in classes:
        mine = images[labels == k][:per_class]
        tiles += list(mine) + [blank] * (per_class - len(mine))
    return make_grid(torch.stack(tiles), nrow=per_class, padding=pad, pad_value=1.0)


def save_png(image: torch.Tensor, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write an image (3 x H x W, float in [0, 1] or uint8) as a PNG marked ``Software: sowmeta``, atomically.

    An existing file is replaced only with ``overwrite`` and only if sowmeta wrote it (the mark).
    """
    from PIL import Image, PngImagePlugin

    pixels = image if image.dtype == torch.uint8 else image.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", PNG_SOFTWARE)
    path = Path(path)
    with atomic_file(path, overwrite=overwrite, kind="png") as tmp:
        Image.fromarray(pixels.permute(1, 2, 0).contiguous().cpu().numpy()).save(tmp, format="png", pnginfo=info)
    return path


def save_contact_sheet(grid: torch.Tensor, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write a grid (3 x H x W in [0, 1]) as a sowmeta PNG, atomically (see ``save_png``)."""
    return save_png(grid, path, overwrite=overwrite)


def write_pngs(synth: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> int:
    """Write every image of a synthesis file as ``out_dir/<class label>/<index>.png``; returns the count.

    The folder gets a ``.sowmeta-png`` marker, so that a later ``overwrite`` can tell it is sowmeta's.
    """
    from PIL import Image

    info = read_info(synth)
    images, labels = load_images(synth)
    names = info.classes or [str(k) for k in range(int(labels.max()) + 1)]
    with atomic_dir(out_dir, overwrite=overwrite, kind="png-tree") as tmp:
        (tmp / PNG_MARKER).write_text("written by sowmeta\n", encoding="utf-8")
        for i, (img, y) in enumerate(zip(images, labels.tolist())):
            folder = tmp / names[y]
            folder.mkdir(exist_ok=True)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:06d}.png")
    return len(labels)
