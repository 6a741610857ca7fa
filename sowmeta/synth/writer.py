"""The HDF5 synthesis file, written batch by batch so that an interrupted run resumes where it stopped.

While a run is under way its images go to ``OUT.partial`` (one per rank under torchrun:
``OUT.rank{r}of{w}.partial``). Every dataset is sized for the whole plan up front and each
finished batch is marked in ``batch_done``; a re-run with the same settings skips those
batches. When every batch is done the partial file(s) become ``OUT`` by one rename (merged
first under torchrun), so ``OUT`` is never half-written.

Layout of ``OUT`` (readers depend on this only; see docs/synthesis.md):
``images`` uint8 [N, H, W, 3] chunked per batch, ``labels`` int64 [N], ``confidence`` and
``loss`` float32 [N] (the teacher's softmax probability and cross-entropy of the target class),
``prediction`` int64 [N] (the teacher's top-1 class),
optional ``snapshots`` uint8 [S, N, H, W, 3] with attribute ``iterations``, and attributes
``format``, ``format_version``, ``config`` (JSON), ``run_key``, ``labels`` (JSON class names),
``bundle``, ``bundle_revision``, ``bundle_commit``, ``model``, ``tool_version``, ``created``.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file, publish_modes
from ..bundle.manifest import now
from ..errors import ConfigError, DataError, OutputExistsError, StorageError, first_line, storage_errors
from .plan import Plan
from ..outputs import require_replaceable
from ..version import __version__

__all__ = ["SynthWriter", "partial_path", "merge_shards", "FORMAT", "FORMAT_VERSION"]

log = logging.getLogger(__name__)

FORMAT = "sowmeta-synth"
FORMAT_VERSION = "1.0"


_HDF5_ERRNO = re.compile(r"errno = (\d+)")


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed HDF5 write as one line: h5py raises ``OSError`` or ``RuntimeError`` with the errno (a full disk) in its text.

    A full disk can leave the partial file damaged beyond its last finished batch; the message says how to go on either way.
    """
    try:
        yield
    except (OSError, RuntimeError) as exc:
        found = _HDF5_ERRNO.search(str(exc))
        code = int(found.group(1)) if found else getattr(exc, "errno", None)
        _quiet_failed_writes()
        if code:
            fix = "free some space" if code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else "check the path and its permissions"
            raise StorageError(f"cannot write {path}: {os.strerror(code)}; {fix} and run the same command again to continue from the "
                               "finished batches (add --overwrite to start over if it says the file is damaged)") from exc
        raise StorageError(f"cannot write {path}: {first_line(str(exc))}; the file is damaged (by an earlier failed write?): "
                           "run the same command with --overwrite to start over") from exc


def _quiet_failed_writes() -> None:
    """After a failed write, HDF5 writes again whenever an object of the file is freed, and Python prints each failure as
    an "Exception ignored" traceback; the one line already raised says it all, so those are dropped (others are not)."""
    previous = sys.unraisablehook
    if getattr(previous, "sowmeta_hdf5", False):
        return

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, (OSError, RuntimeError)) and "write failed" in str(exc):
            return
        previous(unraisable)

    hook.sowmeta_hdf5 = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def partial_path(out: Path, rank: int = 0, world: int = 1) -> Path:
    """Where a run writes before it is complete."""
    return out.with_name(f"{out.name}.partial" if world == 1 else f"{out.name}.rank{rank}of{world}.partial")


class SynthWriter:
    """One partial HDF5 file: create it for a plan, or reopen it to resume (same ``run_key`` only).

    Args:
        path: the partial file.
        plan: the images and batches of the whole run.
        size: (H, W) of the images.
        run_key: identifies the settings; a partial file with another key is refused.
        attrs: attributes copied to the final file (JSON-encoded when not plain).
        snapshots: number of intermediate snapshots per image (0: none).
        overwrite: discard an existing partial file instead of resuming it.
    """

    def __init__(
        self,
        path: Path,
        plan: Plan,
        size: tuple[int, int],
        *,
        run_key: str,
        attrs: dict[str, Any],
        snapshots: int = 0,
        overwrite: bool = False,
    ) -> None:
        import h5py

        self.path = path
        self.plan = plan
        if (path.exists() or path.is_symlink()) and overwrite:
            require_replaceable(path, "synth", what="unfinished run")
            path.unlink()
        if path.exists():
            try:
                self.file = h5py.File(path, "r+")
            except OSError as exc:
                raise DataError(f"{path} is unreadable ({exc}); delete it or pass --overwrite to start over") from exc
            key = self.file.attrs.get("run_key")
            if key != run_key or self.file["images"].shape[0] != len(plan):
                self.file.close()
                raise ConfigError(
                    f"{path} was started with other settings (classes, counts, model, bundle or options); "
                    "run the same command to resume it, or pass --overwrite to start over"
                )
            log.info("resuming %s: %d of %d batches done", path, self.done_count, len(plan.batches))
            return
        with storage_errors("write", path):
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = h5py.File(path, "w")
        try:
            with _writing(path):
                n, (h, w) = len(plan), size
                chunk = max(1, min(n, max(b - a for a, b in plan.batches)))
                f = self.file
                f.create_dataset("images", (n, h, w, 3), dtype="uint8", chunks=(chunk, h, w, 3))
                f.create_dataset("labels", data=np.asarray(plan.labels, dtype=np.int64))
                f.create_dataset("confidence", (n,), dtype="float32", fillvalue=np.nan)
                f.create_dataset("loss", (n,), dtype="float32", fillvalue=np.nan)
                f.create_dataset("prediction", (n,), dtype="int64", fillvalue=-1)
                f.create_dataset("batch_done", (len(plan.batches),), dtype="uint8")
                f.create_dataset("batches", data=np.asarray(plan.batches, dtype=np.int64).reshape(-1, 2))
                if snapshots:
                    f.create_dataset("snapshots", (snapshots, n, h, w, 3), dtype="uint8", chunks=(1, chunk, h, w, 3))
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["run_key"] = run_key
                f.attrs["tool_version"] = __version__
                f.attrs["created"] = now()
                for k, v in attrs.items():
                    f.attrs[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v)
                f.flush()
        except StorageError:
            self.close()
            raise

    @property
    def done_count(self) -> int:
        return int(np.asarray(self.file["batch_done"][:]).sum())

    def done(self) -> set[int]:
        """Indices of the finished batches."""
        return {int(i) for i in np.flatnonzero(self.file["batch_done"][:])}

    def write_batch(
        self,
        index: int,
        images: np.ndarray,
        confidence: np.ndarray,
        loss: np.ndarray,
        prediction: np.ndarray,
        snapshots: list[tuple[int, np.ndarray]] | None = None,
    ) -> None:
        """Store batch ``index`` (images uint8 B x H x W x 3), then mark it done and flush."""
        a, b = self.plan.batches[index]
        f = self.file
        with _writing(self.path):
            f["images"][a:b] = images
            f["confidence"][a:b] = confidence
            f["loss"][a:b] = loss
            f["prediction"][a:b] = prediction
            if snapshots and "snapshots" in f:
                for s, (it, snap) in enumerate(snapshots):
                    f["snapshots"][s, a:b] = snap
                f["snapshots"].attrs["iterations"] = [it for it, _ in snapshots]
            f["batch_done"][index] = 1
            f.flush()

    def close(self) -> None:
        """Close the file; after a failed write (a full disk) its last flush fails too, which changes nothing then."""
        if self.file.id.valid:
            try:
                self.file.close()
            except (OSError, RuntimeError):
                log.debug("closing %s after a failed write", self.path, exc_info=True)
                self.file = None  # type: ignore[assignment]  # freed now, while the failed writes are quieted, not at exit
                gc.collect()

    def complete(self) -> bool:
        return self.done_count == len(self.plan.batches)


def _finish(path: Path, out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{out} already exists; choose another path or pass --overwrite")
        require_replaceable(out, "synth")
    publish_modes(path)
    os.replace(path, out)


def merge_shards(shards: list[Path], out: Path, *, overwrite: bool) -> None:
    """Combine complete partial files (one per rank) into ``out``; remove the shards."""
    import h5py

    if len(shards) == 1:
        _finish(shards[0], out, overwrite)
        return
    with atomic_file(out, overwrite=overwrite, kind="synth") as tmp:
        with h5py.File(shards[0], "r") as first, h5py.File(tmp, "w") as dst:
            for name, ds in first.items():
                dst.create_dataset(name, shape=ds.shape, dtype=ds.dtype, chunks=ds.chunks, fillvalue=ds.fillvalue)
            for k, v in first.attrs.items():
                dst.attrs[k] = v
            if "snapshots" in first:
                dst["snapshots"].attrs["iterations"] = first["snapshots"].attrs.get("iterations", [])
            dst["labels"][:] = first["labels"][:]
            dst["batches"][:] = first["batches"][:]
            batches = first["batches"][:]
            for shard in shards:
                with h5py.File(shard, "r") as src:
                    for i in np.flatnonzero(src["batch_done"][:]):
                        a, b = (int(v) for v in batches[i])
                        for name in ("images", "confidence", "loss", "prediction"):
                            dst[name][a:b] = src[name][a:b]
                        if "snapshots" in src:
                            dst["snapshots"][:, a:b] = src["snapshots"][:, a:b]
                        dst["batch_done"][i] = 1
            if not np.asarray(dst["batch_done"][:]).all():
                raise DataError(f"the shards {', '.join(map(str, shards))} do not cover every batch; run the command again to finish them")
    for shard in shards:
        shard.unlink(missing_ok=True)
