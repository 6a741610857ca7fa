"""Labelled image folders (class-per-folder, the ImageFolder layout) that survive corrupt files."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .errors import CorruptImageError, DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderIndex", "scan_image_folder", "ImageFiles", "collate_skip_bad", "read_image"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif")


@dataclass
class ImageFolderIndex:
    """The files of a class-per-folder dataset; class index = position of the folder in sorted order."""

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]
    per_class: list[int] = field(default_factory=list)

    def limit(self, per_class: int | None) -> ImageFolderIndex:
        """Keep the first ``per_class`` files (sorted by name) of every class."""
        if per_class is None:
            return self
        if per_class < 1:
            raise DataError(f"images per class limit must be at least 1, not {per_class}")
        seen = [0] * len(self.classes)
        kept = []
        for path, label in self.samples:
            if seen[label] < per_class:
                kept.append((path, label))
                seen[label] += 1
        return ImageFolderIndex(self.root, self.classes, kept, seen)


def scan_image_folder(root: str | Path) -> ImageFolderIndex:
    """Index ``root/<class>/<image>``; raise ``DataError`` when the layout is not class-per-folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; pass a folder with one subfolder per class")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not subdirs:
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(f"{root} is not class-per-folder{hint}: put each class's images in root/<class>/")
    if loose:
        raise DataError(f"{root} mixes {len(loose)} loose images with class folders; move them into root/<class>/")
    samples: list[tuple[Path, int]] = []
    per_class = []
    for label, d in enumerate(subdirs):
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        samples += [(p, label) for p in files]
        per_class.append(len(files))
    if not samples:
        raise DataError(f"{root} has class folders but no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
    return ImageFolderIndex(root, [d.name for d in subdirs], samples, per_class)


def read_image(path: str | Path) -> Any:
    """Open an image as RGB with PIL, decoding it fully (so truncation shows here)."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


class ImageFiles(Dataset):
    """(image tensor, label, index) per file; an undecodable file yields ``None`` instead of a tensor."""

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable[[Any], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int]:
        path, label = self.samples[i]
        try:
            return self.transform(read_image(path)), label, i
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for corrupt files
            log.debug("cannot decode %s: %s", path, exc)
            return None, label, i


def collate_skip_bad(batch: list[tuple[torch.Tensor | None, int, int]]) -> tuple[torch.Tensor | None, torch.Tensor, list[int]]:
    """Stack the decodable images; return (images, labels, indices of undecodable files)."""
    good = [(x, y) for x, y, _ in batch if x is not None]
    bad = [i for x, _, i in batch if x is None]
    if not good:
        return None, torch.empty(0, dtype=torch.long), bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.long), bad


def raise_if_strict(bad: list[int], samples: Sequence[tuple[Path, int]], strict: bool) -> None:
    """In strict mode, the first undecodable image is an error."""
    if strict and bad:
        path = samples[bad[0]][0]
        raise CorruptImageError(f"cannot decode image {path}; remove it, or drop --strict to skip and count bad images", path=str(path))
