"""A bundle's safetensors files: writing them in shards, verifying them, and reading rows without trusting them.

Reading opens each file once (handles closed on return), checks every tensor's dtype and shape
against the manifest *before* reading it, reads only the rows asked for (``pread`` of their byte
ranges, docs/format.md: memory and time grow with the classes read), and checks the values
it read (finite means, non-negative variances and counts). Verifying (``verify_files``) hashes
the files and checks the rules that need every row (``rules.py``). Every failure is a
``BundleError`` naming the file, the tap, the class and the rule broken.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import stat
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import sha256_file
from .rules import RuleBroken, check_counts, check_pooling, check_rows, finite_globals
from ..errors import ChecksumError, CorruptBundleError
from .manifest import FORMAT_NAME, FileRecord, Manifest
from .safetensors_header import Entry, LayoutError, read_at, read_header
from .verified import CheckedFile, recall_file, remember_file

__all__ = ["TapStats", "write_files", "verify_files", "check_contained", "check_values", "read_stats", "STORED_DTYPES"]

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
        try:
            save_file({k: tensors[k] for k in keys}, str(directory / name), metadata=meta)
        except Exception as exc:  # safetensors reports a failed write (a full disk) as its own error type: make it an OSError
            raise _as_os_error(exc, directory / name) from exc
        records.append(FileRecord(name, sha256_file(directory / name), (directory / name).stat().st_size, sorted(keys)))
    return records


def _as_os_error(exc: Exception, path: Path) -> Exception:
    """safetensors' ``I/O error: File too large (os error 27)`` as the ``OSError`` it reports; any other error as it is."""
    found = re.search(r"\(os error (\d+)\)", str(exc))
    if found is None:
        return exc
    code = int(found.group(1))
    return OSError(code, os.strerror(code), str(path))


def check_contained(path: Path, manifest: Manifest) -> None:
    """Refuse to publish a bundle whose manifest or files are symbolic links leading out of its directory.

    Not a rule of the format (the Hugging Face cache links every file to a blob elsewhere): a push
    must not upload a file the bundle only points at."""
    root = path.resolve()
    for name in ("sowmeta.json", *(f.name for f in manifest.files)):
        target = (path / name).resolve()
        if root not in target.parents:
            raise CorruptBundleError(
                f"{path / name} is a link to {target}, outside the bundle; copy the real file into the bundle", path=str(path / name)
            )


def verify_files(path: Path, manifest: Manifest, *, cached: bool = False) -> None:
    """Check every file (size, sha256, header, tensors) and that it belongs to this very manifest (format 1.1+),
    then the rules that need every row (``check_values``).

    Every file is hashed in full, and files that pass are remembered (``verified.py``) once
    the whole bundle passed. With ``cached``, a file whose identity (device, inode, size, mtime,
    ctime) is unchanged since it last passed is not read again: its remembered sha256 and
    manifest digest are compared, and a bundle none of whose files was read is not checked again.
    """
    expected = None if manifest.format_version == "1.0" else manifest.digest
    fresh: list[tuple[os.stat_result, os.stat_result, CheckedFile]] = []
    for f in manifest.files:
        fp = path / f.name
        try:
            before = fp.stat()
        except FileNotFoundError:
            raise CorruptBundleError(f"{fp} is missing; the bundle is incomplete, fetch or collect it again", path=str(fp), rule="file-present") from None
        except OSError as exc:
            raise CorruptBundleError(f"cannot read {fp} ({exc.strerror or exc}); check its permissions", path=str(fp)) from exc
        if not stat.S_ISREG(before.st_mode):
            raise CorruptBundleError(f"{fp} is missing; the bundle is incomplete, fetch or collect it again", path=str(fp), rule="file-present")
        if before.st_size != f.size:
            raise ChecksumError(f"{fp} has {before.st_size} bytes, the manifest says {f.size}: truncated or replaced", path=str(fp), rule="file-checksum")
        # a 1.0 file carries no manifest digest, so its record cannot vouch for the manifest beside it
        known = recall_file(before) if cached and expected is not None else None
        if known is None:
            known, after = _check_file(fp, f, before, manifest, expected)
            fresh.append((before, after, known))
        elif known.sha256 != f.sha256:
            raise ChecksumError(f"{fp} sha256 {known.sha256[:12]}... differs from the manifest's {f.sha256[:12]}...: corrupt", path=str(fp), rule="file-checksum")
        elif known.manifest_sha256 != expected:
            raise _changed(path, f.name)
    if fresh:
        check_values(path, manifest)
        for before, after, known in fresh:
            remember_file(before, after, known)


def _changed(path: Path, fname: str) -> ChecksumError:
    return ChecksumError(
        f"{path / 'sowmeta.json'} was changed after the bundle was written (its content no longer matches {fname}); "
        "fetch or collect the bundle again",
        path=str(path), rule="file-digest",
    )


def _check_file(fp: Path, record: FileRecord, before: os.stat_result, manifest: Manifest, expected: str | None) -> tuple[CheckedFile, os.stat_result]:
    """Hash a file in full and check its header against the manifest; what a record of it holds, and its ``stat`` after."""
    try:
        digest = sha256_file(fp)
        after = fp.stat()
    except OSError as exc:
        raise CorruptBundleError(f"cannot read {fp} ({exc.strerror or exc}); check its permissions", path=str(fp)) from exc
    if digest != record.sha256:
        raise ChecksumError(f"{fp} sha256 {digest[:12]}... differs from the manifest's {record.sha256[:12]}...: corrupt", path=str(fp), rule="file-checksum")
    with open(fp, "rb", buffering=0) as f:
        _, meta = _open_table(f, fp, record, manifest, expected)
    return CheckedFile(digest, meta.get("manifest_sha256")), after


def _open_table(f: io.FileIO, fp: Path, record: FileRecord, manifest: Manifest, expected: str | None = None) -> tuple[dict[str, Entry], dict[str, str]]:
    """The header of an open bundle file, checked: safetensors layout, metadata, (with ``expected``) the manifest
    digest, and exactly the tensors ``record`` lists, each of the dtype and shape the manifest implies."""
    try:
        table, meta = read_header(f, os.fstat(f.fileno()).st_size)
    except LayoutError as exc:
        raise CorruptBundleError(f"{fp} is not valid safetensors: {exc}; fetch or collect the bundle again", path=str(fp), rule="safetensors") from None
    except (OSError, ValueError) as exc:
        raise CorruptBundleError(f"cannot read {fp} ({type(exc).__name__}); fetch or collect the bundle again", path=str(fp)) from exc
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != manifest.format_version:
        raise CorruptBundleError(
            f"{fp}: its metadata says format {meta.get('format')!r} version {meta.get('format_version')!r}, "
            f"the manifest {FORMAT_NAME!r} {manifest.format_version!r}; the file belongs to another bundle",
            path=str(fp), rule="file-metadata",
        )
    if expected is not None and meta.get("manifest_sha256") != expected:
        raise _changed(fp.parent, fp.name)
    listed = set(record.tensors)
    extra = sorted(set(table) - listed)
    missing = sorted(listed - set(table))
    if extra or missing:
        what = f"holds {extra[0]!r}, which the manifest does not list there" if extra else f"has no tensor {missing[0]!r}, which the manifest lists there"
        raise CorruptBundleError(f"{fp} {what}; the file is corrupt", path=str(fp), rule="file-tensors")
    k = manifest.model.num_classes
    channels = {t.name: t.channels for t in manifest.taps}
    for key, entry in table.items():
        tap, _, part = key.rpartition("/")
        dtype, shape = ("I64", (k,)) if key == "counts" else (_HEADER_DTYPES[manifest.dtype], (channels[tap],) if part.startswith("global_") else (k, channels[tap]))
        if entry.shape != shape or entry.dtype != dtype:
            raise CorruptBundleError(
                f"{fp}: {key!r} is {entry.dtype} {list(entry.shape)}, the manifest says {dtype} {list(shape)}; the file is corrupt",
                path=str(fp), rule="tensor-shape",
            )
    return table, meta


def check_values(path: Path, manifest: Manifest) -> None:
    """The rules on every row of the bundle (``counts``, ``finite``, ``empty-rows``, ``image-var-bound``,
    ``global-pooling``), a group of taps at a time so that memory stays near ``_GROUP_BYTES``."""
    everything = list(range(manifest.model.num_classes))
    for taps in _tap_groups(manifest):
        counts, stats = read_stats(path, manifest, everything, taps)
        with _refused(path):
            for tap in taps:
                s = stats[tap]
                check_rows(tap, everything, counts, s.mean, s.var, s.image_var, manifest.dtype, finite=False)  # read_stats checked that
                check_pooling(tap, counts, s.mean, s.var, s.global_mean, s.global_var, manifest.dtype)


_GROUP_BYTES = 64 << 20  # the rows check_values holds at once


def _tap_groups(manifest: Manifest) -> list[list[str]]:
    """The taps in order, in groups whose rows take about ``_GROUP_BYTES`` (at least one tap each)."""
    groups: list[list[str]] = [[]]
    size = 0
    per_channel = manifest.model.num_classes * (3 if manifest.has_image_var else 2) * 4
    for t in manifest.taps:
        if groups[-1] and size + t.channels * per_channel > _GROUP_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(t.name)
        size += t.channels * per_channel
    return groups


@contextmanager
def _refused(path: Path) -> Iterator[None]:
    """A broken rule on the values becomes a ``CorruptBundleError`` naming the bundle and the rule."""
    try:
        yield
    except RuleBroken as exc:
        raise CorruptBundleError(f"{path}: {exc}; the bundle is damaged, collect it again", path=str(path), rule=exc.rule) from None


def _runs(rows: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous ascending runs [start, stop) covering ``rows`` (which must be sorted, unique)."""
    runs: list[tuple[int, int]] = []
    for r in rows:
        if runs and runs[-1][1] == r:
            runs[-1] = (runs[-1][0], r + 1)
        else:
            runs.append((r, r + 1))
    return runs


_ELEMENT = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "I64": (torch.int64, 8)}
_PREADV = hasattr(os, "preadv")
_MAX_BUFFERS = 512  # buffers per preadv call (the system's limit, IOV_MAX, is 1024 on Linux)


class _Reader:
    """Read checked tensors and row ranges by offset (no memory map): a read costs the bytes it returns, no more.

    Files are opened on demand (closed by the caller's ExitStack) and their headers parsed once;
    every tensor's dtype, shape and byte length are checked against the manifest when its read is
    planned (``add``); ``read`` then reads ranges that are adjacent in a file (a tap's global rows,
    or everything in a full load) with one system call.
    """

    def __init__(self, path: Path, manifest: Manifest, stack: ExitStack) -> None:
        self.path = path
        self.manifest = manifest
        self.stack = stack
        self.where = {t: f for f in manifest.files for t in f.tensors}
        self.files: dict[str, tuple[io.FileIO, dict[str, Entry]]] = {}
        self.pending: dict[io.FileIO, list[tuple[int, memoryview, str]]] = {}

    def _entry(self, key: str, shape: tuple[int, ...], dtype: str) -> tuple[io.FileIO, Entry]:
        record = self.where[key]
        if record.name not in self.files:
            fp = self.path / record.name
            f = self.stack.enter_context(open(fp, "rb", buffering=0))
            self.files[record.name] = (f, _open_table(f, fp, record, self.manifest)[0])
        f, table = self.files[record.name]
        entry = table[key]  # _open_table checked that the file holds exactly its listed tensors, shaped as the manifest says
        if entry.shape != shape or entry.dtype != dtype:
            raise ValueError(f"{key!r} is {entry.dtype} {list(entry.shape)}, not {dtype} {list(shape)}")
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
                read_at(f, offset + skip, view[skip:])

    def _damaged(self, key: str, exc: BaseException) -> CorruptBundleError:
        fp = self.path / self.where[key].name
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


def read_stats(
    path: Path, manifest: Manifest, classes: Sequence[int], taps: Sequence[str]
) -> tuple[torch.Tensor, dict[str, TapStats]]:
    """Counts and statistics of ``classes`` (in that order) and ``taps``; every file handle closed on return.

    Checked: the whole ``counts`` tensor (rule ``counts``, it is small) and the rows read (rule
    ``finite``); the rules that need every row are ``check_values``'.
    """
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
        all_counts = torch.empty(k, dtype=torch.int64)
        reader.add(_bytes_of(all_counts), "counts", (k,), "I64", None)
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
    with _refused(path):
        check_counts(all_counts, manifest.source.empty_classes, manifest.source.images)
    counts = pick(all_counts[order] if n != k else all_counts)
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
        with _refused(path):
            for name in taps:  # name the first bad value
                s = stats[name]
                check_rows(name, list(classes), torch.ones(len(classes)), s.mean, s.var, s.image_var, manifest.dtype, whole=False)
                finite_globals(name, s.global_mean, s.global_var)
    return counts, stats
