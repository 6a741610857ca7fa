"""A bundle's safetensors files: writing them in shards, verifying them, and reading rows without trusting them.

Reading opens each file once (handles closed on return), checks every tensor's dtype and shape
against the manifest *before* reading it, reads only the rows asked for (``pread`` of their byte
ranges, docs/format.md: memory and time grow with the classes read), and checks the values
it read (finite means, non-negative variances and counts). Every failure is a ``BundleError``
naming the file, the tap and the class.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import stat
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
import torch

from .atomic import sha256_file
from .errors import ChecksumError, CorruptBundleError
from .manifest import FORMAT_NAME, FileRecord, Manifest
from .verified import CheckedFile, recall_file, remember_file

__all__ = ["TapStats", "write_files", "verify_files", "check_contained", "read_stats", "STORED_DTYPES"]

log = logging.getLogger(__name__)

STORED_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_HEADER_DTYPES = {"float32": "F32", "float16": "F16"}


@dataclass
class TapStats:
    """Statistics of one tap for the loaded classes (rows in ``Bundle.classes`` order)."""

    mean: torch.Tensor  # [K', C]
    var: torch.Tensor  # [K', C]
    global_mean: torch.Tensor  # [C]
    global_var: torch.Tensor  # [C]
    image_var: torch.Tensor | None = None  # [K', C] (1.3): variance of the per-image means; None in older bundles


def write_files(
    directory: Path, tensors: dict[str, torch.Tensor], *, format_version: str, digest: str, shard_bytes: int
) -> list[FileRecord]:
    """Write ``tensors`` into ``stats.safetensors`` (or ``stats-0000i-of-0000n.safetensors`` shards).

    Sharding is huggingface_hub's: tensors in order, a new shard when the next would exceed
    ``shard_bytes``. Every file's metadata names the format and holds ``digest`` (the manifest's
    ``content_digest``).
    """
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(tensors, filename_pattern="stats{suffix}.safetensors", max_shard_size=shard_bytes)
    records = []
    for i, (name, keys) in enumerate(split.filename_to_tensors.items()):
        meta = {"format": FORMAT_NAME, "format_version": format_version, "shard": f"{i + 1}/{len(split.filename_to_tensors)}", "manifest_sha256": digest}
        save_file({k: tensors[k] for k in keys}, str(directory / name), metadata=meta)
        records.append(FileRecord(name, sha256_file(directory / name), (directory / name).stat().st_size, sorted(keys)))
    return records


def check_contained(path: Path, manifest: Manifest) -> None:
    """Refuse a bundle whose manifest or files are symbolic links leading out of its directory."""
    root = path.resolve()
    for name in ("sowmeta.json", *(f.name for f in manifest.files)):
        target = (path / name).resolve()
        if root not in target.parents:
            raise CorruptBundleError(
                f"{path / name} is a link to {target}, outside the bundle; copy the real file into the bundle", path=str(path / name)
            )


def _digest_of(path: Path) -> str | None:
    """The manifest digest a safetensors file carries in its metadata (None when absent: format 1.0); ``ValueError`` when malformed."""
    with open(path, "rb", buffering=0) as f:
        _, meta = _read_header(f, os.fstat(f.fileno()).st_size)
    digest = meta.get("manifest_sha256")
    return digest if isinstance(digest, str) else None


def verify_files(path: Path, manifest: Manifest, *, cached: bool = False) -> None:
    """Check every file's size and sha256, and (format 1.1+) that the files belong to this very manifest.

    Every file is hashed in full, and a file that passes is remembered (``sowmeta.verified``).
    With ``cached``, a file whose identity (device, inode, size, mtime, ctime) is unchanged since
    it last passed is not hashed again: its remembered sha256 and manifest digest are compared.
    """
    expected = None if manifest.format_version == "1.0" else manifest.digest
    for f in manifest.files:
        fp = path / f.name
        try:
            before = fp.stat()
        except FileNotFoundError:
            raise CorruptBundleError(f"{fp} is missing; the bundle is incomplete, fetch or collect it again", path=str(fp)) from None
        except OSError as exc:
            raise CorruptBundleError(f"cannot read {fp} ({exc.strerror or exc}); check its permissions", path=str(fp)) from exc
        if not stat.S_ISREG(before.st_mode):
            raise CorruptBundleError(f"{fp} is missing; the bundle is incomplete, fetch or collect it again", path=str(fp))
        if before.st_size != f.size:
            raise ChecksumError(f"{fp} has {before.st_size} bytes, the manifest says {f.size}: truncated or replaced", path=str(fp))
        known = recall_file(before) if cached else None
        if known is None:
            known = _check_file(fp, f, before)
        elif known.sha256 != f.sha256:
            raise ChecksumError(f"{fp} sha256 {known.sha256[:12]}... differs from the manifest's {f.sha256[:12]}...: corrupt", path=str(fp))
        if expected is not None and known.manifest_sha256 != expected:
            raise ChecksumError(
                f"{path / 'sowmeta.json'} was changed after the bundle was written (its content no longer matches "
                f"{f.name}); fetch or collect the bundle again",
                path=str(path),
            )


def _check_file(fp: Path, record: FileRecord, before: os.stat_result) -> CheckedFile:
    """Hash a file in full and read the manifest digest it carries; remember it when it matches the manifest."""
    try:
        digest = sha256_file(fp)
        after = fp.stat()
    except OSError as exc:
        raise CorruptBundleError(f"cannot read {fp} ({exc.strerror or exc}); check its permissions", path=str(fp)) from exc
    if digest != record.sha256:
        raise ChecksumError(f"{fp} sha256 {digest[:12]}... differs from the manifest's {record.sha256[:12]}...: corrupt", path=str(fp))
    try:
        found = _digest_of(fp)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a malformed header: bad JSON, missing or mistyped fields
        raise CorruptBundleError(f"{fp} is not a readable safetensors file ({type(exc).__name__})", path=str(fp)) from exc
    checked = CheckedFile(digest, found)
    remember_file(before, after, checked)
    return checked


def _runs(rows: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous ascending runs [start, stop) covering ``rows`` (which must be sorted, unique)."""
    runs: list[tuple[int, int]] = []
    for r in rows:
        if runs and runs[-1][1] == r:
            runs[-1] = (runs[-1][0], r + 1)
        else:
            runs.append((r, r + 1))
    return runs


# A safetensors file: 8 bytes (little-endian header length n), n bytes of JSON, then the tensors' bytes.
_ELEMENT = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "I64": (torch.int64, 8)}
_MAX_HEADER = 100_000_000  # safetensors' own limit


class _Entry(NamedTuple):
    """Where one tensor lies in its file, as its header says (absolute byte offsets)."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def _read_at(f: io.FileIO, offset: int, into: memoryview) -> None:
    """Fill ``into`` with the file's bytes from ``offset`` on (``pread``: one call, no seek); ``ValueError`` when the file ends first."""
    done = 0
    while done < len(into):
        got = os.preadv(f.fileno(), [into[done:]], offset + done) if _PREADV else _seek_read(f, offset + done, into[done:])
        if not got:
            raise ValueError(f"the file ends before byte {offset + len(into)}")
        done += got


_PREADV = hasattr(os, "preadv")
_MAX_BUFFERS = 512  # buffers per preadv call (the system's limit, IOV_MAX, is 1024 on Linux)


def _seek_read(f: io.FileIO, offset: int, into: memoryview) -> int:
    f.seek(offset)
    return f.readinto(into) or 0


def _read_header(f: io.FileIO, size: int) -> tuple[dict[str, _Entry], dict[str, object]]:
    """The tensor table and the metadata of an open safetensors file; ``ValueError`` when it does not fit the file."""
    head = bytearray(8)
    _read_at(f, 0, memoryview(head))
    n = int.from_bytes(head, "little")
    if n > min(size - 8, _MAX_HEADER):
        raise ValueError(f"header of {n} bytes in a file of {size}")
    text = bytearray(n)
    _read_at(f, 8, memoryview(text))
    table = json.loads(text)
    if not isinstance(table, dict):
        raise ValueError("the header is not a JSON object")
    meta = table.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("the header's metadata is not a JSON object")
    entries = {}
    base = 8 + n
    for key, info in table.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if type(start) is not int or type(end) is not int or not 0 <= start <= end or base + end > size:
            raise ValueError(f"{key!r} lies outside the file")
        entries[key] = _Entry(str(info["dtype"]), tuple(map(int, info["shape"])), base + start, base + end)
    return entries, meta


class _Reader:
    """Read checked tensors and row ranges by offset (no memory map): a read costs the bytes it returns, no more.

    Files are opened on demand (closed by the caller's ExitStack) and their headers parsed once;
    every tensor's dtype, shape and byte length are checked against the manifest when its read is
    planned (``add``); ``read`` then reads ranges that are adjacent in a file (a tap's global rows,
    or everything in a full load) with one system call.
    """

    def __init__(self, path: Path, manifest: Manifest, stack: ExitStack) -> None:
        self.path = path
        self.stack = stack
        self.where = {t: f.name for f in manifest.files for t in f.tensors}
        self.files: dict[str, tuple[io.FileIO, dict[str, _Entry]]] = {}
        self.pending: dict[io.FileIO, list[tuple[int, memoryview, str]]] = {}

    def _entry(self, key: str, shape: tuple[int, ...], dtype: str) -> tuple[io.FileIO, _Entry]:
        fname = self.where[key]
        if fname not in self.files:
            f = self.stack.enter_context(open(self.path / fname, "rb", buffering=0))
            self.files[fname] = (f, _read_header(f, os.fstat(f.fileno()).st_size)[0])
        f, table = self.files[fname]
        entry = table.get(key)
        if entry is None:
            fp = self.path / fname
            raise CorruptBundleError(f"{fp} has no tensor {key!r}, the manifest lists it there; the file is corrupt", path=str(fp))
        if entry.shape != shape or entry.dtype != dtype:
            fp = self.path / fname
            raise CorruptBundleError(
                f"{fp}: {key!r} is {entry.dtype} {list(entry.shape)}, the manifest says {dtype} {list(shape)}; the file is corrupt",
                path=str(fp),
            )
        if entry.end - entry.start != math.prod(shape) * _ELEMENT[dtype][1]:
            raise ValueError(f"{key!r} holds {entry.end - entry.start} bytes, not {list(shape)} x {dtype}")
        return f, entry

    def add(self, into: memoryview, key: str, shape: tuple[int, ...], dtype: str, runs: list[tuple[int, int]] | None) -> None:
        """Plan to fill ``into`` (exactly as many bytes) with the tensor ``key``, or with its rows ``runs`` ([start, stop), in order)."""
        try:
            f, entry = self._entry(key, shape, dtype)
            row = math.prod(shape[1:]) * _ELEMENT[dtype][1]
            at = 0
            pieces = self.pending.setdefault(f, [])
            for a, b in [(0, shape[0])] if runs is None else runs:
                want = (b - a) * row
                pieces.append((entry.start + a * row, into[at : at + want], key))
                at += want
            if at != len(into):
                raise ValueError(f"{key!r}: {at} bytes asked into a buffer of {len(into)}")
        except CorruptBundleError:
            raise
        except Exception as exc:  # noqa: BLE001  (OS, JSON and torch errors all mean a damaged file)
            raise self._damaged(key, exc) from exc

    def read(self) -> None:
        """Do the planned reads: byte ranges that follow each other in a file are one ``preadv`` into their buffers."""
        for f, pieces in self.pending.items():
            pieces.sort(key=lambda p: p[0])
            i = 0
            while i < len(pieces):
                j, end = i + 1, pieces[i][0] + len(pieces[i][1])
                while j < len(pieces) and j - i < _MAX_BUFFERS and pieces[j][0] == end:
                    end += len(pieces[j][1])
                    j += 1
                try:
                    self._read_run(f, pieces[i:j])
                except Exception as exc:  # noqa: BLE001
                    raise self._damaged(pieces[i][2], exc) from exc
                i = j
        self.pending.clear()

    @staticmethod
    def _read_run(f: io.FileIO, run: list[tuple[int, memoryview, str]]) -> None:
        """One read of consecutive byte ranges into their buffers (piece by piece after a short read)."""
        total = sum(len(view) for _, view, _ in run)
        got = os.preadv(f.fileno(), [view for _, view, _ in run], run[0][0]) if _PREADV and len(run) > 1 else 0
        if got == total:
            return
        for offset, view, _ in run:  # a short read (or one piece): finish piece by piece
            skip = min(max(got, 0), len(view))
            got -= skip
            if skip < len(view):
                _read_at(f, offset + skip, view[skip:])

    def _damaged(self, key: str, exc: BaseException) -> CorruptBundleError:
        fp = self.path / self.where[key]
        return CorruptBundleError(
            f"{fp}: cannot read {key!r} ({type(exc).__name__}); the file is truncated or corrupt, fetch it again", path=str(fp)
        )


def _bytes_of(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous tensor, writable in place."""
    return memoryview(t.view(-1).view(torch.uint8).numpy())


def _in_range(values: torch.Tensor, low: float) -> bool:
    """All values finite and >= ``low``, in one pass (``aminmax`` propagates NaN)."""
    if values.numel() == 0:
        return True
    lo, hi = torch.aminmax(values)
    return bool(lo >= low) and bool(hi < math.inf)


def _check_values(path: Path, tap: str, stats: TapStats, classes: Sequence[int]) -> None:
    """Finite means and variances, non-negative variances; the first bad value is named by tap and class."""
    per_class = [("mean", stats.mean), ("var", stats.var)] + ([("image_var", stats.image_var)] if stats.image_var is not None else [])
    for what, rows in per_class:
        if _in_range(rows, -math.inf if what == "mean" else 0.0):
            continue
        bad = ~torch.isfinite(rows) if what == "mean" else ~(torch.isfinite(rows) & (rows >= 0))
        r, c = (int(v) for v in torch.nonzero(bad)[0])
        raise CorruptBundleError(
            f"{path}: tap {tap!r}, class {classes[r]}, channel {c}: {what} is {float(rows[r, c])}; "
            "the bundle is damaged, collect it again",
            path=str(path),
        )
    for what, row in (("global_mean", stats.global_mean), ("global_var", stats.global_var)):
        ok = torch.isfinite(row) & ((row >= 0) if what == "global_var" else True)
        if not bool(ok.all()):
            c = int(torch.nonzero(~ok)[0])
            raise CorruptBundleError(f"{path}: tap {tap!r}, channel {c}: {what} is {float(row[c])}; the bundle is damaged", path=str(path))


def read_stats(
    path: Path, manifest: Manifest, classes: Sequence[int], taps: Sequence[str]
) -> tuple[torch.Tensor, dict[str, TapStats]]:
    """Counts and statistics of ``classes`` (in that order) and ``taps``, checked; every file handle closed on return."""
    k = manifest.model.num_classes
    order = sorted(set(classes))
    runs = _runs(order)
    pos = {c: i for i, c in enumerate(order)}
    # rows come back in sorted order; reorder them only when ``classes`` asked for another order
    gather = None if list(classes) == order else torch.tensor([pos[c] for c in classes], dtype=torch.long)

    def pick(rows: torch.Tensor) -> torch.Tensor:
        return rows if gather is None else rows[gather]

    dt = _HEADER_DTYPES[manifest.dtype]
    stored = STORED_DTYPES[manifest.dtype]
    channels = {t.name: t.channels for t in manifest.taps}
    n = len(order)
    # Every tap's rows go into one block per kind, read in place and checked with one pass per
    # block: a load's cost is the bytes it reads plus a few operations, not a few per tap.
    width = sum(channels[name] for name in taps)
    rows_of = {"mean": n, "var": n, "global_mean": 1, "global_var": 1}
    if manifest.has_image_var:
        rows_of["image_var"] = n
    blocks = {what: torch.empty(r * width, dtype=stored) for what, r in rows_of.items()}
    with ExitStack() as stack:
        reader = _Reader(path, manifest, stack)
        counts = torch.empty(n, dtype=torch.int64)
        reader.add(_bytes_of(counts), "counts", (k,), "I64", runs)
        raw = {what: _bytes_of(block) for what, block in blocks.items()}
        item = stored.itemsize
        at = 0
        for name in taps:
            c = channels[name]
            for what, r in rows_of.items():
                span = raw[what][at * r * item : (at + c) * r * item]
                per_class = not what.startswith("global_")
                reader.add(span, f"{name}/{what}", (k, c) if per_class else (c,), dt, runs if per_class else None)
            at += c
        reader.read()
    counts = pick(counts)
    if bool((counts < 0).any()):
        r = int(torch.nonzero(counts < 0)[0])
        raise CorruptBundleError(f"{path}: class {classes[r]} has a negative image count; the bundle is damaged", path=str(path))
    values = {what: block.float() for what, block in blocks.items()}
    stats: dict[str, TapStats] = {}
    at = 0
    for name in taps:
        c = channels[name]
        stats[name] = TapStats(
            pick(values["mean"][at * n : (at + c) * n].view(n, c)),
            pick(values["var"][at * n : (at + c) * n].view(n, c)),
            values["global_mean"][at : at + c],
            values["global_var"][at : at + c],
            pick(values["image_var"][at * n : (at + c) * n].view(n, c)) if "image_var" in values else None,
        )
        at += c
    lows = {"mean": -math.inf, "var": 0.0, "global_mean": -math.inf, "global_var": 0.0, "image_var": 0.0}
    if not all(_in_range(block, lows[what]) for what, block in values.items()):
        for name in taps:  # name the first bad value
            _check_values(path, name, stats[name], classes)
    return counts, stats
