"""The bundle: class-conditional statistics of one model, as a directory of safetensors + a manifest.

A bundle is ``sowmeta.json`` (``manifest.py``) plus one or more ``.safetensors`` files
(``files.py``) holding ``<tap>/mean``, ``<tap>/var`` [num_classes, channels],
``<tap>/global_mean``, ``<tap>/global_var`` [channels] and ``counts`` [num_classes]. This
module holds the values; ``check.py`` checks them against a model. docs/format.md
is the specification.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_dir
from .files import STORED_DTYPES, TapStats, read_stats, verify_files
from .rules import RuleBroken, check_counts, check_pooling, check_rows
from ..data.class_names import resolve_classes
from ..errors import ConfigError
from .manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    FileRecord,
    Manifest,
    ModelRecord,
    SourceRecord,
    TapRecord,
    now,
    read_manifest,
)
from ..models.preprocess import Preprocessing
from . import pretrained
from .schema import validate_manifest
from ..moments.class_moments import ClassMoments
from .verified import remember_digest
from ..models.taps import Tap

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

DEFAULT_SHARD_BYTES = 1 << 30


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
        image_var: bool = True,
    ) -> Bundle:
        """Build an in-memory bundle (all classes) from collected moments; ``image_var=False`` leaves the image spread out."""
        missing = [t.name for t in taps if t.name not in moments]
        if missing:
            raise ConfigError(f"no features were recorded at tap {missing[0]!r}; did the model run a forward pass?")
        counts = moments[taps[0].name].images.cpu().clone()
        stats: dict[str, TapStats] = {}
        records = []
        for t in taps:
            m = moments[t.name]
            _, gmean, gvar = m.pooled()
            spread = m.image_var().float().cpu() if image_var else None
            stats[t.name] = TapStats(m.mean.float().cpu(), m.var().float().cpu(), gmean.float().cpu(), gvar.float().cpu(), spread)
            if t.axis is None:
                raise ConfigError(f"tap {t.name!r} has no channel axis decided; record it through a forward pass first")
            records.append(TapRecord(t.name, t.module, t.position, t.kind, m.channels, t.axis, t.prefix_tokens))
        empty = [int(k) for k in torch.nonzero(counts == 0).flatten()]
        source = SourceRecord(**{**vars(source), "empty_classes": empty, "images": int(counts.sum())})
        if ":" in model.architecture and not model.architecture.startswith(("timm:", "hf-hub:")):
            # a manifest never names code to run: the user's module:factory is recorded for information only
            model = ModelRecord(**{**vars(model), "architecture": "custom", "factory": model.factory or model.architecture})
        manifest = Manifest(model, records, preprocessing, source, "float32", [], now())
        return cls(manifest, stats, counts, list(range(model.num_classes)))

    # --- writing -------------------------------------------------------------------------

    def _check_writable(self, dtype: str) -> None:
        k = self.manifest.model.num_classes
        if self.classes != list(range(k)):
            raise ConfigError("this bundle was loaded with a subset of classes; load it whole before saving")
        if dtype not in STORED_DTYPES:
            raise ConfigError(f"dtype {dtype!r} is not supported; use float32 or float16")
        limit = torch.finfo(STORED_DTYPES[dtype]).max
        for t in self.manifest.taps:
            s = self.stats.get(t.name)
            if s is None or tuple(s.mean.shape) != (k, t.channels) or tuple(s.var.shape) != (k, t.channels):
                raise ConfigError(f"tap {t.name!r}: statistics do not have shape [{k}, {t.channels}]")
            if s.image_var is not None and tuple(s.image_var.shape) != (k, t.channels):
                raise ConfigError(f"tap {t.name!r}: image variance does not have shape [{k}, {t.channels}]")
            for what, v in (("mean", s.mean), ("var", s.var), ("global mean", s.global_mean), ("global var", s.global_var), ("image var", s.image_var)):
                if v is None:
                    continue
                if not torch.isfinite(v).all():
                    raise ConfigError(f"tap {t.name!r}: {what} holds NaN or inf; the model's features overflowed")
                if v.abs().max() > limit:
                    raise ConfigError(f"tap {t.name!r}: {what} exceeds the {dtype} range; save with dtype float32")
            if (s.var < 0).any() or (s.global_var < 0).any() or (s.image_var is not None and (s.image_var < 0).any()):
                raise ConfigError(f"tap {t.name!r}: negative variance")
        self._check_rules(dtype)

    def _check_rules(self, dtype: str) -> None:
        """Refuse statistics a reader would refuse (docs/format.md, "Rules"), as they would be stored in ``dtype``."""
        stored = STORED_DTYPES[dtype]
        src = self.manifest.source
        every = list(range(self.manifest.model.num_classes))
        with_image_var = all(s.image_var is not None for s in self.stats.values())
        try:
            check_counts(self.counts.to(torch.int64), src.empty_classes, src.images)
            for t in self.manifest.taps:
                s = self.stats[t.name]
                mean, var, gmean, gvar = (v.to(stored).float() for v in (s.mean, s.var, s.global_mean, s.global_var))
                spread = s.image_var.to(stored).float() if with_image_var and s.image_var is not None else None
                check_rows(t.name, every, self.counts, mean, var, spread, dtype)
                check_pooling(t.name, self.counts, mean, var, gmean, gvar, dtype)
        except RuleBroken as exc:
            raise ConfigError(f"these statistics break the format's rule {exc.rule} ({exc}), so no reader would accept them; nothing was written") from None

    def _tensors(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        tensors = {"counts": self.counts.to(torch.int64).contiguous()}
        # image_var only when every tap has it: a reader takes a bundle's image variances all or none
        with_image_var = all(s.image_var is not None for s in self.stats.values())
        for name, s in self.stats.items():
            parts = [("mean", s.mean), ("var", s.var), ("global_mean", s.global_mean), ("global_var", s.global_var)]
            for part, value in parts + ([("image_var", s.image_var)] if with_image_var else []):
                tensors[f"{name}/{part}"] = value.to(dtype).contiguous()
        return tensors

    def save(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        dtype: str = "float32",
        shard_bytes: int = DEFAULT_SHARD_BYTES,
    ) -> Path:
        """Write the bundle directory atomically (temporary directory, then rename).

        With ``overwrite``, an existing directory is replaced only if it is a sowmeta bundle
        holding nothing else (or is empty).
        """
        from .files import write_files

        self._check_writable(dtype)
        path = Path(path)
        fresh = {"files": [], "dtype": dtype, "format_version": FORMAT_VERSION, "raw": None, "source_sha256": None}
        base = Manifest(**{**vars(self.manifest), **fresh})
        digest = base.digest
        with atomic_dir(path, overwrite=overwrite, kind="bundle") as tmp:
            files = write_files(tmp, self._tensors(STORED_DTYPES[dtype]), format_version=FORMAT_VERSION, digest=digest, shard_bytes=shard_bytes)
            manifest = Manifest(**{**vars(base), "files": files})
            data = manifest.to_dict()
            text = (json.dumps(data, indent=2) + "\n").encode("utf-8")
            written = hashlib.sha256(text).hexdigest()
            validate_manifest(data, path=str(path), source_sha256=written)
            manifest.check_consistency(path=str(path))
            (tmp / MANIFEST_NAME).write_bytes(text)
            remember_digest(written, digest)  # a later load of these bytes need not re-encode them
        self.manifest = manifest
        self.path = path
        log.info("wrote bundle %s (%d files)", path, len(files))
        return path

    # --- reading -------------------------------------------------------------------------

    read_manifest = staticmethod(read_manifest)

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        classes: Iterable[int] | None = None,
        taps: Iterable[str] | None = None,
        registry: str | Path | None = "hub",
        token: str | None = None,
    ) -> Bundle:
        """A bundle by registry name ``ORG/NAME[/SUBFOLDER][@REV]``, pulled (and verified) from the Hub by default.

        The same as ``sowmeta.registry.from_pretrained``, which does the work (``pretrained.py``).

        Example:
            >>> bundle = Bundle.from_pretrained("me/cifar-resnet56/sowmeta", classes=[3, 5])
        """
        return pretrained.fetch(name, classes=classes, taps=taps, registry=registry, token=token)  # type: ignore[no-any-return]

    def verify(self) -> None:
        """Check every file's size and sha256 (hashed in full), and that the manifest is the one the files were written with."""
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
        manifest: Manifest | None = None,
    ) -> Bundle:
        """Read a bundle; with ``classes`` only those rows are read (memory ~ classes used).

        Args:
            path: the bundle directory.
            classes: classes to load, in the order wanted: indices, or labels (a label several classes
                share is refused; pass their index); default all.
            taps: tap names to load; default all.
            verify: check file sizes and sha256 first (streams the files; constant memory). A file
                that passed before and whose size, mtime, ctime and inode are unchanged since is
                not hashed again (``verify_files(..., cached=True)``; docs/format.md, "Integrity").
            manifest: the manifest already read from ``path`` with its files verified (what
                ``sowmeta.registry.locate_bundle`` returns): neither is done again.

        Raises:
            BundleNotFoundError, SchemaError, UnsupportedVersionError, ChecksumError,
            CorruptBundleError (also for NaN/inf or negative values in the rows read),
            ConfigError (a class index or tap that does not exist).
        """
        path = Path(path)
        if not path.exists() and not path.is_absolute() and str(path).count("/") >= 1 and not str(path).startswith("."):
            from ..errors import BundleNotFoundError

            raise BundleNotFoundError(
                f"{path} is not a directory; for a registry name use Bundle.from_pretrained({str(path)!r}) (or sowmeta.registry.pull)", path=str(path)
            )
        if manifest is None:
            manifest = read_manifest(path)
            if verify:
                verify_files(path, manifest, cached=True)
        k = manifest.model.num_classes
        wanted = resolve_classes(classes, manifest.model.labels, k, unique=False, where="this bundle")
        if not wanted:
            raise ConfigError("classes=[] selects no class; pass at least one class index, or None for all")
        names = manifest.tap_names if taps is None else list(taps)
        known = set(manifest.tap_names)
        unknown = [t for t in names if t not in known]
        if unknown:
            raise ConfigError(f"tap {unknown[0]!r} is not in this bundle; its taps: {', '.join(manifest.tap_names[:5])}...")
        counts, stats = read_stats(path, manifest, wanted, names)
        return cls(manifest, stats, counts, wanted, path)

    # --- checking ------------------------------------------------------------------------

    def check(self, model: nn.Module, *, check_weights: bool = True, device: torch.device | str = "cpu") -> None:
        """Raise ``ModelMismatchError`` unless ``model`` is the one these statistics were recorded on.

        See ``check.check_model``; ``check_weights=False`` skips only the
        weights fingerprint, never the taps, channels, classes or structure.
        """
        from .check import check_model

        check_model(self.manifest, model, check_weights=check_weights, device=device)

    # --- access --------------------------------------------------------------------------

    def row(self, cls_index: int) -> int:
        """Row of class ``cls_index`` in the loaded tensors."""
        try:
            return self.classes.index(cls_index)
        except ValueError:
            raise ConfigError(f"class {cls_index} was not loaded; pass it in classes=") from None

    def require_statistics(self, classes: Iterable[int]) -> None:
        """Raise ``ConfigError`` for a class whose statistics are empty (no image of it was collected)."""
        labels = self.labels
        for c in classes:
            if int(self.counts[self.row(c)]) == 0:
                name = labels[c] if c < len(labels) else str(c)
                raise ConfigError(
                    f"class {name!r} ({c}) has no statistics in this bundle (no image of it was collected); "
                    "leave it out with --classes, or use --mode global"
                )

    @property
    def labels(self) -> list[str]:
        return self.manifest.model.labels

    def __repr__(self) -> str:
        m = self.manifest
        return f"Bundle({m.model.architecture}, {len(self.classes)}/{m.model.num_classes} classes, {len(m.taps)} taps, scenario {m.source.scenario})"
