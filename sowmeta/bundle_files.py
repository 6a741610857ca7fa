"""A bundle's safetensors files: writing them in shards, verifying them, and reading rows without trusting them.

Reading opens each file once (handles closed on return), checks every tensor's dtype and shape
against the manifest *before* reading it, reads only the rows asked for, and checks the values
it read (finite means, non-negative variances and counts). Every failure is a ``BundleError``
naming the file, the tap and the class.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("manifest_sha256")


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
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error type for malformed headers)
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


class _Reader:
    """Open files on demand (closed by the caller's ExitStack) and read checked tensors and row slices."""

    def __init__(self, path: Path, manifest: Manifest, stack: ExitStack) -> None:
        self.path = path
        self.manifest = manifest
        self.stack = stack
        self.where = {t: f.name for f in manifest.files for t in f.tensors}
        self.handles: dict[str, Any] = {}

    def _slice(self, key: str, shape: tuple[int, ...], dtype: str) -> Any:
        from safetensors import safe_open

        fname = self.where[key]
        fp = self.path / fname
        if fname not in self.handles:
            self.handles[fname] = self.stack.enter_context(safe_open(str(fp), framework="pt"))
        sl = self.handles[fname].get_slice(key)
        if tuple(sl.get_shape()) != shape or sl.get_dtype() != dtype:
            raise CorruptBundleError(
                f"{fp}: {key!r} is {sl.get_dtype()} {list(sl.get_shape())}, the manifest says {dtype} {list(shape)}; the file is corrupt",
                path=str(fp),
            )
        return sl

    def read(self, key: str, shape: tuple[int, ...], dtype: str, runs: list[tuple[int, int]] | None) -> torch.Tensor:
        fp = self.path / self.where[key]
        try:
            sl = self._slice(key, shape, dtype)
            if runs is None:
                return sl[:]
            return sl[runs[0][0] : runs[0][1]] if len(runs) == 1 else torch.cat([sl[a:b] for a, b in runs])
        except CorruptBundleError:
            raise
        except Exception as exc:  # noqa: BLE001  (safetensors, OS and torch errors all mean a damaged file)
            raise CorruptBundleError(
                f"{fp}: cannot read {key!r} ({type(exc).__name__}); the file is truncated or corrupt, fetch it again", path=str(fp)
            ) from exc


def _in_range(values: torch.Tensor, low: float) -> bool:
    """All values finite and >= ``low``, in one pass (``aminmax`` propagates NaN)."""
    if values.numel() == 0:
        return True
    lo, hi = torch.aminmax(values)
    return bool(lo >= low) and bool(hi < math.inf)


def _check_values(path: Path, tap: str, stats: TapStats, classes: Sequence[int]) -> None:
    """Finite means and variances, non-negative variances; the first bad value is named by tap and class."""
    for what, rows in (("mean", stats.mean), ("var", stats.var)):
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
    channels = {t.name: t.channels for t in manifest.taps}
    with ExitStack() as stack:
        reader = _Reader(path, manifest, stack)
        counts = pick(reader.read("counts", (k,), "I64", runs))
        if bool((counts < 0).any()):
            r = int(torch.nonzero(counts < 0)[0])
            raise CorruptBundleError(f"{path}: class {classes[r]} has a negative image count; the bundle is damaged", path=str(path))
        stats: dict[str, TapStats] = {}
        for name in taps:
            c = channels[name]
            s = TapStats(
                pick(reader.read(f"{name}/mean", (k, c), dt, runs)).float(),
                pick(reader.read(f"{name}/var", (k, c), dt, runs)).float(),
                reader.read(f"{name}/global_mean", (c,), dt, None).float(),
                reader.read(f"{name}/global_var", (c,), dt, None).float(),
            )
            _check_values(path, name, s, classes)
            stats[name] = s
    return counts, stats
