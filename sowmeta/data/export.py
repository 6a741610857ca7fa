"""Images out of a synthesis file: PNG folders per class and contact sheets (one builder, ``sheet``, for all of them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_dir, atomic_file
from ..outputs import PNG_MARKER, PNG_SOFTWARE
from .image_sets import load_images, read_info

__all__ = ["sheet", "contact_sheet", "readable_scale", "save_contact_sheet", "save_png", "write_pngs"]


def readable_scale(size: int, target: int = 96) -> int:
    """How many times to enlarge tiles of ``size`` px so a person can see them (nearest-neighbour, whole pixels)."""
    return max(1, target // max(1, size))


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def sheet(
    rows: Sequence[Sequence[torch.Tensor | None]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[tuple[str, int]] | None = None,
    scale: int = 1,
    pad: int = 2,
) -> torch.Tensor:
    """Tiles (3 x h x w, uint8 or float in [0, 1]; None: a blank tile) in rows, on white, as one uint8 image 3 x H x W.

    ``row_labels`` are written left of each row, ``col_labels`` (text, columns spanned) above the
    columns. Without labels the layout is torchvision's ``make_grid``: ``pad`` pixels around and
    between tiles. Every contact sheet of sowmeta (``--grid``, ``evaluate --sheets``, the demo) is one.
    """
    from PIL import Image, ImageDraw

    first = next(t for row in rows for t in row if t is not None)
    h, w = first.shape[-2] * scale, first.shape[-1] * scale
    cols = max(len(r) for r in rows)
    font = _font(max(10, min(h // 3, 18)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max((probe.textbbox((0, 0), t, font=font)[2] for t in row_labels), default=0) + 2 * pad if row_labels else 0
    top = max((probe.textbbox((0, 0), t, font=font)[3] for t, _ in col_labels), default=0) + 2 * pad if col_labels else 0
    canvas = Image.new("RGB", (left + cols * (w + pad) + pad, top + len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = top + pad + r * (h + pad)
        for c, tile in enumerate(row):
            if tile is None:
                continue
            pixels = tile if tile.dtype == torch.uint8 else tile.float().clamp(0, 1).mul(255).round().to(torch.uint8)
            img = Image.fromarray(pixels.permute(1, 2, 0).contiguous().cpu().numpy())
            canvas.paste(img.resize((w, h), Image.NEAREST) if scale != 1 else img, (left + pad + c * (w + pad), y))
        if row_labels:
            draw.text((pad, y + h // 2), row_labels[r], fill="black", font=font, anchor="lm")
    if col_labels:
        c = 0
        for text, span in col_labels:
            x = left + pad + c * (w + pad) + (span * (w + pad) - pad) // 2
            draw.text((x, top // 2), text, fill="black", font=font, anchor="mm")
            c += span
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).contiguous()


def contact_sheet(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    classes: Sequence[int] | None = None,
    per_class: int = 8,
    names: Sequence[str] | None = None,
    scale: int = 1,
    pad: int = 2,
) -> torch.Tensor:
    """One row per class with its first ``per_class`` images (N x 3 x H x W), labelled with ``names`` if given -> uint8 3 x H' x W'."""
    classes = sorted({int(c) for c in labels.tolist()}) if classes is None else list(classes)
    rows = []
    for k in classes:
        mine = list(images[labels == k][:per_class])
        rows.append(mine + [None] * (per_class - len(mine)))
    row_labels = [names[k] if k < len(names) else str(k) for k in classes] if names is not None else None
    return sheet(rows, row_labels=row_labels, scale=scale, pad=pad)


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
    """Write every image of a synthesis file as ``out_dir/<NNN_label>/<index>.png``; returns the count.

    Each class with images gets a folder named by its index and label (``003_cat``); no folder
    is made for a class not synthesized. The index prefix is the label: ``sowmeta evaluate`` and
    ``collect`` read it back (with torchvision, map ``int(folder.split("_")[0])``). The folder gets
    a ``.sowmeta-png`` marker, so that a later ``overwrite`` can tell it is sowmeta's.
    """
    import re

    from PIL import Image

    info = read_info(synth)
    images, labels = load_images(synth)
    names = info.classes or [str(k) for k in range(int(labels.max()) + 1)]
    width = len(str(len(names) - 1))
    folders = [f"{k:0{width}d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._') or 'class'}" for k, name in enumerate(names)]
    with atomic_dir(out_dir, overwrite=overwrite, kind="png-tree") as tmp:
        (tmp / PNG_MARKER).write_text("written by sowmeta\n", encoding="utf-8")
        for k in sorted(set(labels.tolist())):
            (tmp / folders[k]).mkdir()
        for i, (img, y) in enumerate(zip(images, labels.tolist())):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp / folders[y] / f"{i:06d}.png")
    return len(labels)
