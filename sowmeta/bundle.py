"""The bundle: class-conditional statistics of one model, as a directory of safetensors + a manifest.

A bundle is ``sowmeta.json`` (validated by ``schemas/bundle-v1.schema.json``) plus one or
more ``.safetensors`` files holding ``<tap>/mean``, ``<tap>/var`` [num_classes, channels],
``<tap>/global_mean``, ``<tap>/global_var`` [channels] and ``counts`` [num_classes].
docs/format.md is the specification.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_dir, sha256_file
from .errors import (
    BundleNotFoundError,
    ChecksumError,
    ConfigError,
    CorruptBundleError,
    ModelMismatchError,
    SchemaError,
    UnsupportedVersionError,
)
from .preprocess import Preprocessing
from .schema import validate_manifest
from .stats import ClassMoments
from .taps import Tap, probe_channels
from .version import __version__

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ModelRecord",
    "TapRecord",
    "SourceRecord",
    "FileRecord",
    "Manifest",
    "TapStats",
    "Bundle",
    "verify_files",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "sowmeta-bundle"
FORMAT_VERSION = "1.0"
MANIFEST_NAME = "sowmeta.json"
DEFAULT_SHARD_BYTES = 1 << 30
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class ModelRecord:
    """Which model the statistics belong to."""

    architecture: str
    fingerprint: str
    num_classes: int
    labels: list[str]
    weights: str | None = None
    fused: bool = False
    base_model: str | None = None


@dataclass(frozen=True)
class TapRecord:
    """A tap and its channel count."""

    name: str
    module: str
    position: str
    kind: str
    channels: int

    @property
    def tap(self) -> Tap:
        return Tap(self.name, self.module, self.position, self.kind)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SourceRecord:
    """Where the statistics came from: scenario A (dataset), B (seeds per class) or C (one seed)."""

    scenario: str
    collector: str
    data: str
    images: int
    empty_classes: list[int] = field(default_factory=list)
    images_per_class_limit: int | None = None
    skipped_images: int = 0
    rejected_seeds: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class FileRecord:
    """One safetensors file of the bundle."""

    name: str
    sha256: str
    size: int
    tensors: list[str]


@dataclass(frozen=True)
class Manifest:
    """``sowmeta.json``: everything needed to read the tensors and to check them against a model."""

    model: ModelRecord
    taps: list[TapRecord]
    preprocessing: Preprocessing
    source: SourceRecord
    dtype: str
    files: list[FileRecord]
    created: str
    tool_version: str = __version__
    format_version: str = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.extra)
        d.update(
            {
                "format": FORMAT_NAME,
                "format_version": self.format_version,
                "model": vars(self.model).copy(),
                "taps": [vars(t).copy() for t in self.taps],
                "preprocessing": self.preprocessing.to_dict(),
                "source": vars(self.source).copy(),
                "dtype": self.dtype,
                "files": [vars(f).copy() for f in self.files],
                "created": self.created,
                "tool": {"name": "sowmeta", "version": self.tool_version},
            }
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, path: str | None = None) -> Manifest:
        """Parse and validate a manifest; refuses newer major versions, accepts newer minor ones."""
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise SchemaError(f"{path or 'manifest'} is not a sowmeta bundle manifest (format != {FORMAT_NAME!r})", path=path)
        version = str(d.get("format_version", ""))
        major, _, minor = version.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise SchemaError(f"{path or 'manifest'}: format_version {version!r} is not MAJOR.MINOR", path=path)
        if int(major) > 1:
            raise UnsupportedVersionError(
                f"bundle format {version} is newer than this sowmeta reads (1.x); upgrade with `pip install -U sowmeta`",
                version=version,
                path=path,
            )
        validate_manifest(d, path=path)
        known = {"format", "format_version", "model", "taps", "preprocessing", "source", "dtype", "files", "created", "tool"}

        def pick(record: type, data: dict[str, Any]) -> Any:
            names = record.__dataclass_fields__
            return record(**{k: v for k, v in data.items() if k in names})

        return cls(
            model=pick(ModelRecord, d["model"]),
            taps=[pick(TapRecord, t) for t in d["taps"]],
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            source=pick(SourceRecord, d["source"]),
            dtype=d["dtype"],
            files=[pick(FileRecord, f) for f in d["files"]],
            created=d["created"],
            tool_version=d["tool"]["version"],
            format_version=version,
            extra={k: v for k, v in d.items() if k not in known},
        )

    @property
    def tap_names(self) -> list[str]:
        return [t.name for t in self.taps]


@dataclass
class TapStats:
    """Statistics of one tap for the loaded classes (rows in ``Bundle.classes`` order)."""

    mean: torch.Tensor  # [K', C]
    var: torch.Tensor  # [K', C]
    global_mean: torch.Tensor  # [C]
    global_var: torch.Tensor  # [C]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _runs(rows: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous ascending runs [start, stop) covering ``rows`` (which must be sorted, unique)."""
    runs: list[tuple[int, int]] = []
    for r in rows:
        if runs and runs[-1][1] == r:
            runs[-1] = (runs[-1][0], r + 1)
        else:
            runs.append((r, r + 1))
    return runs


class Bundle:
    """Class-conditional statistics in memory, possibly for a subset of the classes.

    Example:
        >>> b = Bundle.load("bundles/resnet56-cc", classes=[3, 5])
        >>> b.stats["layer1.0.bn1"].mean.shape   # [2, 16]
    """

    def __init__(self, manifest: Manifest, stats: dict[str, TapStats], counts: torch.Tensor, classes: list[int], path: Path | None = None) -> None:
        self.manifest = manifest
        self.stats = stats
        self.counts = counts
        self.classes = classes
        self.path = path

    # --- construction from moments -----------------------------------------------------

    @classmethod
    def from_moments(
        cls,
        moments: dict[str, ClassMoments],
        taps: Sequence[Tap],
        *,
        model: ModelRecord,
        preprocessing: Preprocessing,
        source: SourceRecord,
    ) -> Bundle:
        """Build an in-memory bundle (all classes) from collected moments."""
        missing = [t.name for t in taps if t.name not in moments]
        if missing:
            raise ConfigError(f"no features were recorded at tap {missing[0]!r}; did the model run a forward pass?")
        first = moments[taps[0].name]
        counts = first.images.cpu().clone()
        stats: dict[str, TapStats] = {}
        records = []
        for t in taps:
            m = moments[t.name]
            _, gmean, gvar = m.pooled()
            stats[t.name] = TapStats(m.mean.float().cpu(), m.var().float().cpu(), gmean.float().cpu(), gvar.float().cpu())
            records.append(TapRecord(t.name, t.module, t.position, t.kind, m.channels))
        empty = [int(k) for k in torch.nonzero(counts == 0).flatten()]
        source = SourceRecord(**{**vars(source), "empty_classes": empty, "images": int(counts.sum())})
        manifest = Manifest(model, records, preprocessing, source, "float32", [], _now())
        return cls(manifest, stats, counts, list(range(model.num_classes)))

    # --- writing -------------------------------------------------------------------------

    def _tensors(self, dtype: torch.dtype) -> list[tuple[str, dict[str, torch.Tensor]]]:
        groups: list[tuple[str, dict[str, torch.Tensor]]] = [("counts", {"counts": self.counts.to(torch.int64).contiguous()})]
        for name, s in self.stats.items():
            groups.append(
                (
                    name,
                    {
                        f"{name}/mean": s.mean.to(dtype).contiguous(),
                        f"{name}/var": s.var.to(dtype).contiguous(),
                        f"{name}/global_mean": s.global_mean.to(dtype).contiguous(),
                        f"{name}/global_var": s.global_var.to(dtype).contiguous(),
                    },
                )
            )
        return groups

    def _check_writable(self, dtype: str) -> None:
        k = self.manifest.model.num_classes
        if self.classes != list(range(k)):
            raise ConfigError("this bundle was loaded with a subset of classes; load it whole before saving")
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype {dtype!r} is not supported; use float32 or float16")
        for t in self.manifest.taps:
            s = self.stats.get(t.name)
            if s is None or tuple(s.mean.shape) != (k, t.channels) or tuple(s.var.shape) != (k, t.channels):
                raise ConfigError(f"tap {t.name!r}: statistics do not have shape [{k}, {t.channels}]")
            for what, v in (("mean", s.mean), ("var", s.var)):
                if not torch.isfinite(v).all():
                    raise ConfigError(f"tap {t.name!r}: {what} holds NaN or inf; the model's features overflowed")
            if (s.var < 0).any():
                raise ConfigError(f"tap {t.name!r}: negative variance")

    def save(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        dtype: str = "float32",
        shard_bytes: int = DEFAULT_SHARD_BYTES,
    ) -> Path:
        """Write the bundle directory atomically (temporary directory, then rename)."""
        from safetensors.torch import save_file

        self._check_writable(dtype)
        torch_dtype = _DTYPES[dtype]
        groups = self._tensors(torch_dtype)
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for _, tensors in groups:
            nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
            if shards[-1] and size + nbytes > shard_bytes:
                shards.append({})
                size = 0
            shards[-1].update(tensors)
            size += nbytes
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite) as tmp:
            files = []
            for i, tensors in enumerate(shards):
                name = "stats.safetensors" if len(shards) == 1 else f"stats-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "shard": f"{i + 1}/{len(shards)}"}
                save_file(tensors, str(tmp / name), metadata=meta)
                files.append(FileRecord(name, sha256_file(tmp / name), (tmp / name).stat().st_size, sorted(tensors)))
            manifest = Manifest(**{**vars(self.manifest), "files": files, "dtype": dtype, "format_version": FORMAT_VERSION})
            data = manifest.to_dict()
            validate_manifest(data, path=str(path))
            (tmp / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        self.manifest = manifest
        self.path = path
        log.info("wrote bundle %s (%d files)", path, len(files))
        return path

    # --- reading -------------------------------------------------------------------------

    @staticmethod
    def read_manifest(path: str | Path) -> Manifest:
        """Parse and validate ``sowmeta.json`` of the bundle at ``path`` (no tensors read)."""
        p = Path(path)
        mpath = p / MANIFEST_NAME if p.is_dir() or not p.suffix == ".json" else p
        if not mpath.is_file():
            raise BundleNotFoundError(f"no bundle at {p} (no {MANIFEST_NAME}); pass a bundle directory or a registry name", path=str(p))
        try:
            data = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SchemaError(f"{mpath} is not valid JSON ({exc}); the bundle is corrupt, fetch or collect it again", path=str(mpath)) from exc
        return Manifest.from_dict(data, path=str(mpath))

    def verify(self) -> None:
        """Check every file's size and sha256 against the manifest."""
        if self.path is None:
            raise ConfigError("this bundle has no path; save it first")
        verify_files(self.path, self.manifest)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        classes: Iterable[int] | None = None,
        taps: Iterable[str] | None = None,
        verify: bool = True,
    ) -> Bundle:
        """Read a bundle; with ``classes`` only those rows are read (memory ~ classes used).

        Args:
            path: the bundle directory.
            classes: class indices to load, in the order wanted; default all.
            taps: tap names to load; default all.
            verify: check file sizes and sha256 first (streams the files; constant memory).

        Raises:
            BundleNotFoundError, SchemaError, UnsupportedVersionError, ChecksumError,
            CorruptBundleError, ConfigError (a class index or tap that does not exist).
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        manifest = cls.read_manifest(path)
        if verify:
            verify_files(path, manifest)
        k = manifest.model.num_classes
        wanted = list(range(k)) if classes is None else [int(c) for c in classes]
        if not wanted:
            raise ConfigError("classes=[] selects no class; pass at least one class index, or None for all")
        bad = [c for c in wanted if not 0 <= c < k]
        if bad:
            raise ConfigError(f"class {bad[0]} does not exist in this bundle (classes 0..{k - 1})")
        names = manifest.tap_names if taps is None else list(taps)
        unknown = [t for t in names if t not in manifest.tap_names]
        if unknown:
            raise ConfigError(f"tap {unknown[0]!r} is not in this bundle; its taps: {', '.join(manifest.tap_names[:5])}...")
        where = {t: f.name for f in manifest.files for t in f.tensors}
        order = sorted(set(wanted))
        runs = _runs(order)
        pos = {c: i for i, c in enumerate(order)}
        gather = torch.tensor([pos[c] for c in wanted], dtype=torch.long)
        handles: dict[str, Any] = {}

        def tensor_slice(key: str, rows: bool) -> torch.Tensor:
            fname = where.get(key)
            if fname is None:
                raise CorruptBundleError(f"{path}: tensor {key!r} is listed in no file of the manifest", path=str(path))
            try:
                if fname not in handles:
                    handles[fname] = safe_open(str(path / fname), framework="pt")
                sl = handles[fname].get_slice(key)
                if rows and (not sl.get_shape() or sl.get_shape()[0] != k):
                    raise CorruptBundleError(
                        f"{path / fname}: {key!r} has shape {sl.get_shape()}, but the bundle has {k} classes; the file is corrupt",
                        path=str(path / fname),
                    )
                t = sl[:] if not rows else torch.cat([sl[a:b] for a, b in runs])[gather]
                return t.float() if t.is_floating_point() else t  # counts stay int64
            except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
                raise CorruptBundleError(
                    f"{path / fname}: cannot read {key!r} ({exc}); the file is truncated or corrupt, fetch it again",
                    path=str(path / fname),
                ) from exc

        counts = tensor_slice("counts", True).to(torch.int64)
        stats: dict[str, TapStats] = {}
        records = {t.name: t for t in manifest.taps}
        for name in names:
            s = TapStats(
                tensor_slice(f"{name}/mean", True),
                tensor_slice(f"{name}/var", True),
                tensor_slice(f"{name}/global_mean", False),
                tensor_slice(f"{name}/global_var", False),
            )
            c = records[name].channels
            if tuple(s.mean.shape) != (len(wanted), c) or tuple(s.global_var.shape) != (c,):
                raise CorruptBundleError(
                    f"{path}: tap {name!r} tensors have shape {tuple(s.mean.shape)}, the manifest says [{k}, {c}]",
                    path=str(path),
                )
            stats[name] = s
        return cls(manifest, stats, counts, wanted, path)

    # --- checking ------------------------------------------------------------------------

    def check(self, model: nn.Module, *, fingerprint: bool = True, device: torch.device | str = "cpu") -> None:
        """Raise ``ModelMismatchError`` unless ``model`` is the one these statistics were recorded on.

        Checks, in order: every tap's module exists, every tap's channel count, the number of
        outputs (classes), then (with ``fingerprint``) the weights' sha256 fingerprint.
        """
        from .models import fingerprint as model_fingerprint

        named = dict(model.named_modules())
        for t in self.manifest.taps:
            if t.module not in named:
                raise ModelMismatchError(f"tap {t.name!r}: the model has no module {t.module!r}; wrong architecture?", tap=t.name)
        crop = self.manifest.preprocessing.crop
        channels = probe_channels(model, [t.tap for t in self.manifest.taps], crop, device=device)
        for t in self.manifest.taps:
            if channels.get(t.name) != t.channels:
                raise ModelMismatchError(
                    f"tap {t.name!r}: the bundle has {t.channels} channels, the model gives {channels.get(t.name)}",
                    tap=t.name,
                )
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, crop, crop, device=device))
        model.train(was)
        if out.shape[-1] != self.manifest.model.num_classes:
            raise ModelMismatchError(
                f"the model has {out.shape[-1]} outputs, the bundle {self.manifest.model.num_classes} classes"
            )
        if fingerprint:
            fp = model_fingerprint(model)
            if fp != self.manifest.model.fingerprint:
                raise ModelMismatchError(
                    f"model fingerprint {fp[:19]}... differs from the bundle's {self.manifest.model.fingerprint[:19]}...: "
                    "these statistics were recorded with other weights"
                )

    # --- access --------------------------------------------------------------------------

    def row(self, cls_index: int) -> int:
        """Row of class ``cls_index`` in the loaded tensors."""
        try:
            return self.classes.index(cls_index)
        except ValueError:
            raise ConfigError(f"class {cls_index} was not loaded; pass it in classes=") from None

    @property
    def labels(self) -> list[str]:
        return self.manifest.model.labels

    def __repr__(self) -> str:
        m = self.manifest
        return f"Bundle({m.model.architecture}, {len(self.classes)}/{m.model.num_classes} classes, {len(m.taps)} taps, scenario {m.source.scenario})"


def verify_files(path: Path, manifest: Manifest) -> None:
    """Check that every file of ``manifest`` exists under ``path`` with its recorded size and sha256."""
    for f in manifest.files:
        fp = path / f.name
        if not fp.is_file():
            raise CorruptBundleError(f"{fp} is missing; the bundle is incomplete, fetch or collect it again", path=str(fp))
        size = fp.stat().st_size
        if size != f.size:
            raise ChecksumError(f"{fp} has {size} bytes, the manifest says {f.size}: truncated or replaced", path=str(fp))
        digest = sha256_file(fp)
        if digest != f.sha256:
            raise ChecksumError(f"{fp} sha256 {digest[:12]}... differs from the manifest's {f.sha256[:12]}...: corrupt", path=str(fp))
