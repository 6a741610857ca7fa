"""Images out of a synthesis file: PNG folders per class and contact-sheet grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import atomic_dir, atomic_file
from ..synthdata import load_images, read_info

__all__ = ["contact_sheet", "save_contact_sheet", "write_pngs"]


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


def save_contact_sheet(grid: torch.Tensor, path: str | Path) -> Path:
    """Write a grid (3 x H x W in [0, 1]) as a PNG, atomically."""
    from torchvision.utils import save_image

    path = Path(path)
    with atomic_file(path) as tmp:
        save_image(grid, tmp, format="png")
    return path


def write_pngs(synth: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> int:
    """Write every image of a synthesis file as ``out_dir/<class label>/<index>.png``; returns the count."""
    from PIL import Image

    info = read_info(synth)
    images, labels = load_images(synth)
    names = info.classes or [str(k) for k in range(int(labels.max()) + 1)]
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for i, (img, y) in enumerate(zip(images, labels.tolist())):
            folder = tmp / names[y]
            folder.mkdir(exist_ok=True)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:06d}.png")
    return len(labels)
