"""How strongly a JPEG file is compressed, and a note when that is strong enough to show in the statistics.

Statistics record what the data looks like, compression included, and synthesis reproduces
it: on CIFAR-10, statistics from JPEGs of quality 75 with 4:2:0 chroma give images that a
network trained on lossless images recognises about ten points less often (studies/cifar10-log.md, 7.5).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "JpegInfo",
    "jpeg_info",
    "ijg_tables",
    "first_per_class",
    "compression_note",
    "compression_record",
    "describe_compression",
    "source_compression_note",
    "STATISTICS_CONSEQUENCE",
    "REFERENCE_CONSEQUENCE",
]

# The IJG (libjpeg) base luminance table in natural order, as Pillow reports tables.
_IJG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_IJG_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *(99,) * 32,
)  # fmt: skip
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
# Small images: measured (studies/cifar10-log.md, 7.5): a lossless-trained CIFAR network loses 2-5 points
# at quality 90-95 and 2 more with 4:2:0 chroma. Photographs: not measured; the line sits where
# 8x8 blocks show even after downscaling to the model's input, below what cameras and photo sites use.
SMALL_SIDE = 64
MIN_QUALITY = 70
MIN_QUALITY_SMALL = 95


@dataclass(frozen=True)
class JpegInfo:
    """A JPEG file's estimated IJG quality (1-100), chroma subsampling and size in pixels."""

    quality: int
    subsampling: str
    width: int
    height: int


def jpeg_info(path: str | Path) -> JpegInfo | None:
    """The file's JPEG compression, or None for another format or an unreadable file (the loader reports those).

    Remembered per file state (path, size, modification time), so a collection's note and its
    manifest record read each sampled header once.
    """
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return _jpeg_info(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _jpeg_info(path: str, size: int, mtime_ns: int) -> JpegInfo | None:
    from PIL import Image, JpegImagePlugin

    try:
        with Image.open(path) as im:
            tables = getattr(im, "quantization", None) or {}
            if im.format != "JPEG" or len(tables.get(0, ())) != 64:  # no luminance table of 64 entries: not ours to judge
                return None
            luma = list(tables[0])
            sampling = JpegImagePlugin.get_sampling(im)
            width, height = im.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    quality = min(range(1, 101), key=lambda q: sum(abs(a - b) for a, b in zip(luma, _ijg_table(q))))
    return JpegInfo(quality, _SUBSAMPLING.get(sampling, "other"), width, height)


@functools.cache
def _ijg_table(quality: int, base: tuple[int, ...] = _IJG_LUMA) -> tuple[int, ...]:
    """libjpeg's table at ``quality`` (its ``jpeg_quality_scaling`` and baseline clamp); built once per quality."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(min(255, max(1, (v * scale + 50) // 100)) for v in base)


def ijg_tables(quality: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The luminance and chrominance quantization tables (natural order) libjpeg writes at ``quality`` (1-100)."""
    return _ijg_table(quality), _ijg_table(quality, _IJG_CHROMA)


def first_per_class(samples: Sequence[tuple[Path, int]], classes: int = 8) -> list[Path]:
    """The first file of each of the first ``classes`` classes met: a cheap sample of how a dataset was stored."""
    seen: dict[int, Path] = {}
    for path, k in samples:
        if k not in seen:
            seen[k] = path
            if len(seen) == classes:
                break
    return list(seen.values())


STATISTICS_CONSEQUENCE = (
    "the statistics record the compression and synthesized images will show it; collect from lossless or "
    "high-quality 4:4:4 images where you have them"
)
REFERENCE_CONSEQUENCE = (
    "FD and KID against them reward images that reproduce the compression (real lossless images of the same "
    "classes score far from them; studies/cifar10-log.md, 7.5)"
)


def _most_compressed(found: Sequence[tuple[Any, JpegInfo]]) -> tuple[Any, JpegInfo]:
    return min(found, key=lambda pi: (pi[1].quality, pi[1].subsampling != "4:2:0"))


def compression_note(paths: Sequence[str | Path], what: str = "images", consequence: str = STATISTICS_CONSEQUENCE) -> str | None:
    """A one-line note when the most compressed JPEG among ``paths`` is compressed enough to show, else None."""
    notable = [(p, i) for p in paths if (i := jpeg_info(p)) is not None and _shows(i)]
    if not notable:
        return None
    path, worst = _most_compressed(notable)
    return (
        f"the {what} are {worst.width}x{worst.height} px JPEGs of quality about {worst.quality} with "
        f"{worst.subsampling} chroma (e.g. {path}): {consequence}"
    )


def _shows(info: JpegInfo) -> bool:
    """Whether this much compression shows in the statistics (the thresholds above)."""
    if min(info.width, info.height) <= SMALL_SIDE:
        return info.quality < MIN_QUALITY_SMALL or info.subsampling == "4:2:0"
    return info.quality < MIN_QUALITY


def compression_record(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The manifest's ``source.compression`` (format 1.2) for data sampled by ``paths``: how many files were
    looked at, how many were JPEGs, and the most compressed JPEG's quality, chroma subsampling and size."""
    found = [(p, i) for p in paths if (i := jpeg_info(p)) is not None]
    worst = _most_compressed(found)[1] if found else None
    return {
        "files_sampled": len(paths),
        "jpeg_files": len(found),
        "quality": worst.quality if worst else None,
        "subsampling": worst.subsampling if worst else None,
        "width": worst.width if worst else None,
        "height": worst.height if worst else None,
    }


def describe_compression(record: Mapping[str, Any] | None) -> str:
    """``source.compression`` in a few words, for ``inspect`` and the Hub card."""
    if record is None:
        return "not recorded"
    sampled, jpegs = record["files_sampled"], record["jpeg_files"]
    if not jpegs:
        return f"no JPEG among {sampled} sampled files"
    return (
        f"JPEG, quality about {record['quality']} with {record['subsampling']} chroma at {record['width']}x{record['height']} px "
        f"(the most compressed of {jpegs} JPEGs among {sampled} sampled files)"
    )


def source_compression_note(record: Mapping[str, Any] | None, jpeg_quality: int = 0) -> str | None:
    """A one-line note when a bundle's statistics come from JPEGs compressed enough to show in them, else None.

    ``jpeg_quality``: the quality synthesis matches the statistics through (``SynthConfig.jpeg_quality``;
    0: none). When set, the compression is being dealt with, and the note is only for a quality that
    differs from the recorded one.
    """
    if record is None or not record["jpeg_files"]:
        return None
    if jpeg_quality:
        if record["quality"] == jpeg_quality:
            return None
        return f"--jpeg-quality {jpeg_quality}, but the bundle's statistics come from JPEGs of quality about {record['quality']}"
    info = JpegInfo(record["quality"], record["subsampling"], record["width"], record["height"])
    if not _shows(info):
        return None
    return (
        f"the bundle's statistics come from {info.width}x{info.height} px JPEGs of quality about {info.quality} with "
        f"{info.subsampling} chroma: the images will carry that compression, and networks trained on lossless images "
        "recognise such images less often (studies/cifar10-log.md, 7.5)"
    )
