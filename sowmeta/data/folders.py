"""Labelled image folders (class-per-folder, the ImageFolder layout) that survive corrupt files, and a fast loader for them.

The loader decodes JPEGs with ``torchvision.io.decode_jpeg`` (the same libjpeg-turbo pixels as
PIL, several times faster) and other formats with PIL, resizes with PIL when the preprocessing
asks for it, crops, and hands uint8 images to the collate function, which normalizes the whole
batch at once: the same numbers as ``Preprocessing.transform()``, bit for bit, at a fraction of
the per-image cost. ``plan_loader`` sizes workers and batches for the cores there are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import CorruptImageError, DataError, first_line
from .class_folders import map_class_folders
from ..models.preprocess import Preprocessing

__all__ = [
    "seed_files",
    "IMAGE_EXTENSIONS",
    "ImageFolderIndex",
    "scan_image_folder",
    "ImageFiles",
    "collate_skip_bad",
    "read_image",
    "decode_file",
    "DecodedImages",
    "NormalizeBatch",
    "LoaderPlan",
    "plan_loader",
    "available_cores",
    "default_workers",
    "folder_loader",
    "EncodedImages",
    "DecodeOnDevice",
]

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


def scan_image_folder(root: str | Path, limit_per_class: int | None = None) -> ImageFolderIndex:
    """Index ``root/<class>/<image>``; raise ``DataError`` when the layout is not class-per-folder.

    ``limit_per_class``: keep only the first files of each class, as ``.limit()`` does (but
    without building a ``Path`` for every file it drops).
    """
    if limit_per_class is not None and limit_per_class < 1:
        raise DataError(f"images per class limit must be at least 1, not {limit_per_class}")
    root = Path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"data folder {root} {what}; pass a folder with one subfolder per class")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not _stray(p.name))
    loose = [p for p in root.iterdir() if p.is_file() and not _stray(p.name) and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not subdirs:
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(f"{root} is not class-per-folder{hint}: put each class's images in root/<class>/")
    if loose:
        raise DataError(f"{root} mixes {len(loose)} loose images with class folders; move them into root/<class>/")
    samples: list[tuple[Path, int]] = []
    per_class = []
    for label, d in enumerate(subdirs):
        files = _image_files(d, limit_per_class)
        samples += [(p, label) for p in files]
        per_class.append(len(files))
    if not samples:
        raise DataError(f"{root} has class folders but no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
    return ImageFolderIndex(root, [d.name for d in subdirs], samples, per_class)


def _stray(name: str) -> bool:
    """Hidden files and folders (macOS's ``._cat.jpg`` resource forks, ``.DS_Store``, ``.ipynb_checkpoints``) and
    ``__MACOSX``, which zip archives made on macOS hold: never images of the dataset."""
    return name.startswith(".") or name == "__MACOSX"


def _image_files(folder: Path, limit: int | None = None) -> list[Path]:
    """Image files anywhere under ``folder``, sorted by their path's parts (``sorted(folder.rglob(...))``'s order); the first ``limit``.

    Hidden files and folders are left out (``_stray``).
    One ``scandir`` per directory, whose entries know their type without a ``stat`` (only
    symbolic links are followed, to see whether they lead to a file); symbolic links to
    directories are not descended into. On CIFAR-10's 5,000 files per class this took half of rglob's time.
    """
    found: list[tuple[tuple[str, ...], str]] = []
    pending: list[tuple[str, tuple[str, ...]]] = [(str(folder), ())]
    while pending:
        path, rel = pending.pop()
        with os.scandir(path) as entries:
            for e in entries:
                if _stray(e.name):
                    continue
                if e.is_dir(follow_symlinks=False):
                    pending.append((e.path, (*rel, e.name)))
                elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file():
                    found.append(((*rel, e.name), e.path))
    found.sort(key=lambda item: item[0])
    return [Path(p) for _, p in found[:limit]]


def read_image(path: str | Path) -> Any:
    """Open an image as RGB with PIL, decoding it fully (so truncation shows here).

    Raises ``ValueError`` (as for any undecodable file) for an image with more pixels than PIL
    decodes safely: a decompression bomb, a few KB that would take gigabytes.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{first_line(str(exc))}: too large to decode (a decompression bomb?)") from exc


def max_pixels() -> int | None:
    """The most pixels an image may have to be decoded: PIL's limit for its DecompressionBombError (None: no limit)."""
    from PIL import Image

    return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)


def jpeg_pixels(data: bytes) -> int | None:
    """Width x height from a JPEG's frame header (SOFn), read without decoding; None when no frame header is found."""
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:  # the end of the image, and no frame header before it
            return None
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 5 : i + 7], "big") * int.from_bytes(data[i + 7 : i + 9], "big")
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _refuse_bomb(data: bytes, path: str | Path) -> None:
    limit, pixels = max_pixels(), jpeg_pixels(data)
    if limit is not None and pixels is not None and pixels > limit:
        raise ValueError(f"{path} has {pixels:,} pixels, more than the {limit:,} decoded safely (a decompression bomb?)")


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


_JPEG_MAGIC = b"\xff\xd8\xff"


def decode_file(path: str | Path) -> torch.Tensor:
    """An image file as RGB uint8 [3, H, W]: JPEGs with ``torchvision.io.decode_jpeg``, other formats with PIL.

    Raises ``OSError``, ``ValueError``, ``SyntaxError`` (PIL) or ``RuntimeError`` (torchvision)
    for a file that cannot be decoded, truncated JPEGs included.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:3] == _JPEG_MAGIC:
        from torchvision.io import ImageReadMode, decode_jpeg

        _refuse_bomb(data, path)
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    return _pil_to_uint8(read_image(path))


def _pil_to_uint8(img: Any) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


class DecodedImages(Dataset):
    """(uint8 image [3, crop, crop], label, index) per file, preprocessed up to normalization; ``None`` for an undecodable file.

    Resizing (when ``preprocessing.resize`` is set) goes through PIL exactly as
    ``Preprocessing.transform()`` does, so the pixels are the same; normalization is left to
    ``NormalizeBatch``, once per batch.
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], preprocessing: Preprocessing) -> None:
        self.samples = list(samples)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.samples)

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        prep = self.preprocessing
        if prep.resize is not None:
            from PIL import Image

            pil = Image.fromarray(image.permute(1, 2, 0).numpy())
            pil = TF.resize(pil, prep.resize, interpolation=TF.InterpolationMode(prep.interpolation), antialias=True)
            image = _pil_to_uint8(pil)
        if image.shape[-2:] != (prep.crop, prep.crop):
            image = TF.center_crop(image, [prep.crop, prep.crop]).contiguous()
        return image

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int]:
        path, label = self.samples[i]
        try:
            return self._prepare(decode_file(path)), label, i
        except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
            log.debug("cannot decode %s: %s", path, exc)
            return None, label, i


class NormalizeBatch:
    """Collate ``DecodedImages`` items: stack the decodable ones and normalize the batch (ToTensor + Normalize's arithmetic).

    Returns (images float32 [B, 3, crop, crop] or None, labels [B], indices of undecodable files).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, batch: list[tuple[torch.Tensor | None, int, int]]) -> tuple[torch.Tensor | None, torch.Tensor, list[int]]:
        images, labels, bad = collate_skip_bad(batch)
        if images is None:
            return None, labels, bad
        return images.float().div_(255).sub_(self.mean).div_(self.std), labels, bad


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class LoaderPlan:
    """How a folder is fed to the model: images per batch, decoding processes, pinned memory, where JPEGs are decoded.

    ``decode_device`` None: the workers decode; a device (``cuda``): the workers only read the
    files and the main process decodes each batch's JPEGs there (nvJPEG) and resizes them.
    """

    batch_size: int
    workers: int
    pin_memory: bool
    decode_device: str | None = None


# Input pixels per batch when the batch size is not given: large enough to keep every core busy,
# small enough that a CPU batch's feature maps stay near the caches.
_PIXELS_PER_BATCH = {"cpu": 1 << 21, "cuda": 1 << 24}
_MAX_BATCH = {"cpu": 256, "cuda": 1024}


def default_workers(device: torch.device | str = "cpu", cores: int | None = None) -> int:
    """Processes decoding images when none is asked for, the same for collect, evaluate and distill (see ``plan_loader``):
    on the CPU one per eight cores (none on a small machine), on CUDA every core but one (at most 8)."""
    cores = cores or available_cores()
    return min(8, cores - 1) if torch.device(device).type == "cuda" else min(8, cores // 8)


def plan_loader(crop: int, device: torch.device | str, *, batch_size: int | None = None, workers: int | None = None,
                cores: int | None = None, resize: int | None = None, interpolation: str = "bilinear") -> LoaderPlan:
    """Batch size, worker count and decoding device for collecting at ``crop`` px on ``device``; given values are kept.

    On the CPU the model's own threads use every core, and decoding costs a few percent of the
    model's time per image (JPEG, ~0.1 ms for CIFAR's 32 px, a few ms at ImageNet's sizes), so
    one decoding process per eight cores keeps the model fed without taking cores from it (none
    on a small machine: decoding then runs between batches). On CUDA the CPU only decodes: every
    core but the one driving the GPU decodes (at most 8), and batches are pinned for
    non-blocking copies; images that are resized (``resize`` set: photographs, not CIFAR's
    thumbnails) are decoded on the GPU, where nvJPEG outruns a few CPU cores many times over.
    """
    dev = torch.device(device)
    kind = "cuda" if dev.type == "cuda" else "cpu"
    if workers is None:
        workers = default_workers(dev, cores)
    if batch_size is None:
        fit = _PIXELS_PER_BATCH[kind] // (crop * crop)
        batch_size = max(8, min(_MAX_BATCH[kind], 1 << max(0, fit.bit_length() - 1)))
    on_gpu = kind == "cuda" and resize is not None and interpolation in _TENSOR_INTERPOLATIONS and _nvjpeg_available()
    return LoaderPlan(batch_size, max(0, workers), kind == "cuda", str(dev) if on_gpu else None)


_TENSOR_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")


def _nvjpeg_available() -> bool:
    """Whether torchvision can decode JPEGs on CUDA here (built with nvJPEG)."""
    try:
        from torchvision.io import decode_jpeg

        return torch.cuda.is_available() and decode_jpeg is not None
    except ImportError:
        return False


def _one_thread(_worker: int) -> None:
    """Decoding processes run one thread each: their parallelism is the number of processes."""
    torch.set_num_threads(1)


def folder_loader(samples: Sequence[tuple[Path, int]], preprocessing: Preprocessing, plan: LoaderPlan) -> Any:
    """An iterable over ``samples`` in order: (normalized images or None, labels, indices of undecodable files) per batch.

    With ``plan.decode_device`` the images come out on that device, decoded there.
    """
    from torch.utils.data import DataLoader

    on_device = plan.decode_device is not None
    loader = DataLoader(
        EncodedImages(samples, preprocessing) if on_device else DecodedImages(samples, preprocessing),
        batch_size=plan.batch_size,
        num_workers=plan.workers,
        collate_fn=_collate_encoded if on_device else NormalizeBatch(preprocessing.mean, preprocessing.std),
        pin_memory=plan.pin_memory and not on_device,
        worker_init_fn=_one_thread if plan.workers else None,
        prefetch_factor=4 if plan.workers else None,
        shuffle=False,
    )
    return DecodeOnDevice(loader, preprocessing, plan.decode_device) if on_device else loader


class EncodedImages(DecodedImages):
    """Like ``DecodedImages``, but a JPEG comes back undecoded (its bytes, uint8 [L]) for decoding on a GPU."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int]:
        path, label = self.samples[i]
        try:
            with open(path, "rb") as f:
                data = f.read()
            if data[:3] == _JPEG_MAGIC:
                _refuse_bomb(data, path)
                return torch.frombuffer(bytearray(data), dtype=torch.uint8), label, i
            return self._prepare(_pil_to_uint8(read_image(path))), label, i
        except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
            log.debug("cannot decode %s: %s", path, exc)
            return None, label, i


def _collate_encoded(batch: list[tuple[torch.Tensor | None, int, int]]) -> tuple[list[torch.Tensor | None], torch.Tensor, list[int]]:
    return [x for x, _, _ in batch], torch.tensor([y for _, y, _ in batch], dtype=torch.long), [i for _, _, i in batch]


class DecodeOnDevice:
    """Decode, resize, crop and normalize each batch of ``EncodedImages`` on ``device`` (nvJPEG on CUDA).

    Resizing runs on the decoded images in float (antialiased, rounded back to 8 bits like
    PIL's), so pixels agree with the CPU route to within a level or two, not bit for bit.
    """

    def __init__(self, loader: Any, preprocessing: Preprocessing, device: str) -> None:
        self.loader = loader
        self.prep = preprocessing
        self.device = torch.device(device)
        self.on_device = self.device.type != "cpu"
        self.mean = torch.tensor(preprocessing.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(preprocessing.std, device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        for items, labels, indices in self.loader:
            yield self.decode(items, labels, indices)

    def _decode_jpegs(self, data: list[torch.Tensor]) -> list[torch.Tensor | None]:
        from torchvision.io import ImageReadMode, decode_jpeg

        if self.on_device and data:
            try:
                return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError:  # a bad file fails the whole batch: decode one by one to find it
                pass
        return [self._decode_one(d) for d in data]

    def _decode_one(self, data: torch.Tensor) -> torch.Tensor | None:
        from torchvision.io import ImageReadMode, decode_jpeg

        if self.on_device:
            try:
                return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:
                pass
        try:
            image = decode_jpeg(data, mode=ImageReadMode.RGB)
        except RuntimeError:
            return None
        if self.on_device:  # the CPU decodes what the device would not: the device cannot decode at all
            log.warning("decoding JPEGs on %s failed; decoding them on the CPU", self.device)
            self.on_device = False
        return image.to(self.device)

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        prep = self.prep
        if prep.resize is not None:
            mode = TF.InterpolationMode(prep.interpolation)
            image = TF.resize(image.float(), prep.resize, interpolation=mode, antialias=True).round_().clamp_(0, 255)
        return TF.center_crop(image, [prep.crop, prep.crop]).float()

    def decode(self, items: list[torch.Tensor | None], labels: torch.Tensor, indices: list[int]) -> tuple[torch.Tensor | None, torch.Tensor, list[int]]:
        """One batch: (normalized images on the device or None, labels of those images, indices of undecodable files)."""
        jpeg = [k for k, x in enumerate(items) if x is not None and x.dim() == 1]
        images: list[torch.Tensor | None] = list(items)
        for k, img in zip(jpeg, self._decode_jpegs([items[k] for k in jpeg])):  # type: ignore[misc]
            images[k] = None if img is None else self._prepare(img)
        for k, x in enumerate(items):
            if x is not None and x.dim() == 3:  # decoded and prepared by a worker (not a JPEG)
                images[k] = x.to(self.device).float()
        good = [k for k, x in enumerate(images) if x is not None]
        bad = [indices[k] for k, x in enumerate(images) if x is None]
        if not good:
            return None, torch.empty(0, dtype=torch.long), bad
        batch = torch.stack([images[k] for k in good])  # type: ignore[misc]
        return batch.div_(255).sub_(self.mean).div_(self.std), labels[good], bad


def seed_files(seeds: str | Path | Mapping[int, Sequence[str | Path]], classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(file, class index) of every seed: folders are named by class label, index or ``NNN_label``."""
    if isinstance(seeds, Mapping):
        bad = [k for k in seeds if isinstance(k, bool) or not isinstance(k, int)]
        if bad:
            raise DataError(f"seed mapping keys are class indices (int), not {bad[0]!r}; map labels with the model's labels first")
        if any(isinstance(paths, (str, Path)) for paths in seeds.values()):
            raise DataError("seed mapping values are lists of image files, not one path; wrap a single seed in a list")
        return [(Path(p), k) for k, paths in seeds.items() for p in paths]
    index = scan_image_folder(seeds)
    mapping = map_class_folders(index.classes, classes, len(classes), allow_position=False, what="seed folder")
    return [(path, mapping.indices[label]) for path, label in index.samples]
