"""Read synthesized image sets (HDF5) and real class-per-folder image sets through one interface.

A synthesis file holds ``images`` (uint8, N x H x W x 3), ``labels`` (int64, N) and, where the
writer recorded them, ``confidence`` and ``loss`` (float32, N) plus attributes (config JSON,
bundle, model, class labels). This reader depends on that layout only, not on the writer.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .folders import read_image, scan_image_folder
from ..errors import CorruptImageError, DataError

__all__ = ["SynthDataset", "SynthInfo", "load_images", "read_info", "is_synth_file", "fit_square"]

log = logging.getLogger(__name__)

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def is_synth_file(path: str | Path) -> bool:
    """True when ``path`` is an HDF5 file (by signature, so any suffix works)."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


@dataclass
class SynthInfo:
    """What a dataset says about itself: size, classes, and (for synthesis files) its attributes."""

    path: str
    kind: str  # "hdf5" or "folder"
    images: int
    classes: list[str] | None
    per_class: list[int]
    size: tuple[int, int] | None  # (H, W) when every image has it (always for HDF5)
    attrs: dict[str, Any] = field(default_factory=dict)


def _decode_attr(value: Any) -> Any:
    """HDF5 attributes as plain Python: bytes -> str, arrays -> lists, JSON strings parsed."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_decode_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _labels_from_attrs(attrs: dict[str, Any]) -> list[str] | None:
    for key in ("labels", "class_labels", "classes", "class_names"):
        value = attrs.get(key)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    model = attrs.get("model")
    if isinstance(model, dict) and isinstance(model.get("labels"), list):
        return [str(v) for v in model["labels"]]
    return None


def _open_h5(path: Path) -> Any:
    import h5py

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot open synthesis file {path}: {exc}; it may be truncated, synthesize it again") from exc
    if "images" not in f or "labels" not in f:
        f.close()
        raise DataError(f"{path} has no 'images' and 'labels' datasets; pass a file written by `sowmeta synthesize`")
    if "batch_done" not in f and _decode_attr(f.attrs.get("format")) == "sowmeta-synth":
        f.close()
        raise DataError(
            f"{path} is a sowmeta synthesis file without its batch bookkeeping ('batch_done'), so whether every batch finished "
            "is unknown; run the `sowmeta synthesize` command that wrote it again"
        )
    if "batch_done" in f:
        done = np.asarray(f["batch_done"][:])
        if not done.all():
            f.close()
            raise DataError(
                f"{path} is an unfinished synthesis run ({int(done.sum())} of {done.size} batches done); "
                "run the same `sowmeta synthesize` command again to finish it, then use the file it writes"
            )
    return f


def _folder_samples(root: Path, names: Sequence[str] | None) -> tuple[list[str], list[tuple[Path, int]]]:
    """A class-per-folder directory's class names and (file, class index) samples.

    With ``names`` (the model's labels) folders are matched to classes by name, as ``collect``
    does (``class_folders.py``): ``cat/`` is the class labelled cat wherever it sorts, and
    ``003_cat/`` class 3. Without them, class k is the k-th folder in sorted order.
    """
    index = scan_image_folder(root)
    if names is None:
        return list(index.classes), list(index.samples)
    from .class_folders import map_class_folders

    mapping = map_class_folders(index.classes, names, len(names))
    return list(names), [(p, mapping.indices[y]) for p, y in index.samples]


def _folder_info(root: Path, classes: list[str], samples: list[tuple[Path, int]]) -> SynthInfo:
    per_class = np.bincount(np.asarray([y for _, y in samples], dtype=np.int64), minlength=len(classes)).tolist()
    return SynthInfo(str(root), "folder", len(samples), classes, per_class, None, {})


def read_info(path: str | Path, *, names: Sequence[str] | None = None) -> SynthInfo:
    """Describe an HDF5 synthesis file or a class-per-folder directory without decoding images.

    ``names``: the model's class labels, to match a folder's class folders to classes by name.
    """
    p = Path(path)
    if is_synth_file(p):
        with _open_h5(p) as f:
            images, labels = f["images"], f["labels"]
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise DataError(f"{p}: 'images' is {images.dtype} {images.shape}, expected uint8 N x H x W x 3; not a sowmeta synthesis file")
            if labels.shape != (images.shape[0],):
                raise DataError(f"{p}: {labels.shape[0]} labels for {images.shape[0]} images; the file is inconsistent, synthesize it again")
            attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
            y = np.asarray(labels[:], dtype=np.int64)
            classes = _labels_from_attrs(attrs)
            n_classes = len(classes) if classes else (int(y.max()) + 1 if y.size else 0)
            if y.size and (y.min() < 0 or y.max() >= n_classes):
                raise DataError(f"{p}: labels span {y.min()}..{y.max()} but the file names {n_classes} classes")
            per_class = np.bincount(y, minlength=n_classes).tolist()
            return SynthInfo(str(p), "hdf5", int(images.shape[0]), classes, per_class, (int(images.shape[1]), int(images.shape[2])), attrs)
    if p.is_dir():
        return _folder_info(p, *_folder_samples(p, names))
    raise DataError(f"{p} is neither an HDF5 synthesis file nor a class-per-folder image directory")


class SynthDataset(Dataset):
    """``(image, label)`` pairs, image a uint8 tensor 3 x H x W, from an HDF5 synthesis file or an image folder.

    The HDF5 file is opened lazily, once per process, so the dataset works with DataLoader
    workers (h5py handles must not cross a fork).

    Args:
        path: an HDF5 file written by synthesis, or a directory ``root/<class>/<image>``.
        transform: applied to each uint8 image tensor (e.g. augmentation or resizing).
        names: the model's class labels; a folder's class folders are then matched to them by name.
    """

    def __init__(self, path: str | Path, transform: Callable[[torch.Tensor], Any] | None = None, *, names: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.transform = transform
        self._file: Any = None
        self._pid: int | None = None
        self._samples: list[tuple[Path, int]] = []
        if self.path.is_dir():
            classes, self._samples = _folder_samples(self.path, names)  # the folder is scanned once
            self.info = _folder_info(self.path, classes, self._samples)
            self.labels = torch.tensor([y for _, y in self._samples], dtype=torch.long)
        else:
            self.info = read_info(self.path, names=names)
            with _open_h5(self.path) as f:
                self.labels = torch.from_numpy(np.asarray(f["labels"][:], dtype=np.int64))

    def with_transform(self, transform: Callable[[torch.Tensor], Any] | None) -> SynthDataset:
        """The same images with another ``transform``, without scanning the folder again."""
        other = copy.copy(self)
        other.transform, other._file, other._pid = transform, None, None
        return other

    @property
    def classes(self) -> list[str] | None:
        return self.info.classes

    @property
    def samples(self) -> list[tuple[Path, int]]:
        """A folder's (file, class index) pairs in order; empty for an HDF5 file."""
        return self._samples

    def __len__(self) -> int:
        return self.info.images

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def _h5(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = _open_h5(self.path), os.getpid()
        return self._file

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as a uint8 tensor 3 x H x W, before ``transform``."""
        if self.info.kind == "hdf5":
            return torch.from_numpy(np.ascontiguousarray(self._h5()["images"][i])).permute(2, 0, 1).contiguous()
        from torchvision.transforms.functional import pil_to_tensor

        path = self._samples[i][0]
        try:
            return pil_to_tensor(read_image(path))
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for corrupt files
            raise CorruptImageError(f"cannot decode image {path}: {exc}; remove or replace it", path=str(path)) from exc

    def __getitem__(self, i: int) -> tuple[Any, int]:
        x = self.image(i)
        return (self.transform(x) if self.transform is not None else x), int(self.labels[i])

    def close(self) -> None:
        """Close this process's HDF5 handle (reopened on next access)."""
        if self._file is not None:
            self._file.close()
            self._file, self._pid = None, None


def load_images(path: str | Path, *, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a synthesis file or image folder as one uint8 tensor N x 3 x H x W, and their labels.

    Args:
        path: an HDF5 synthesis file or a class-per-folder directory.
        size: for folders of mixed sizes, fit every image to ``size`` x ``size`` (square images
            are resized whole; others are resized on the short side and center-cropped).

    Raises:
        DataError: the images differ in size and ``size`` was not given.
    """
    p = Path(path)
    if is_synth_file(p):
        with _open_h5(p) as f:
            x = torch.from_numpy(np.asarray(f["images"][:], dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()
            y = torch.from_numpy(np.asarray(f["labels"][:], dtype=np.int64))
        if size is not None and x.shape[-1] != size:
            x = torch.stack([fit_square(img, size) for img in x])
        return x, y
    ds = SynthDataset(p, transform=(lambda img: fit_square(img, size)) if size is not None else None)
    images = [ds[i][0] for i in range(len(ds))]
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) > 1:
        raise DataError(f"{p} holds images of {len(shapes)} different sizes; pass size= (or --size) to fit them to one")
    return torch.stack(images), ds.labels.clone()


def fit_square(image: torch.Tensor, size: int, *, resize: int | None = None) -> torch.Tensor:
    """Fit a uint8 image 3 x H x W to ``size`` x ``size``.

    Square images are resized whole (cropping a 32 px synthesized image would drop content);
    others are resized so the short side is ``resize`` (default ``size``) and center-cropped.
    """
    from torchvision.transforms.v2 import functional as TF

    h, w = image.shape[-2:]
    if h == w == size:
        return image
    if h == w:
        return TF.resize(image, [size, size], antialias=True)
    image = TF.resize(image, [resize or size], antialias=True)
    return TF.center_crop(image, [size, size])
