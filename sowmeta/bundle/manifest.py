"""``sowmeta.json``: the records a bundle's manifest holds, and reading them without trusting them.

A manifest is parsed as strict I-JSON, checked against ``schemas/bundle-v1.schema.json`` (which
bounds every size), then checked for consistency (one label per class, unique taps and files,
every tensor listed once, no Python code named as the model). docs/format.md is the
specification; every refusal names the rule of its "Rules" section that the manifest breaks.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .canonical_json import StrictJSONError, canonical_json, parse_strict
from ..errors import BundleNotFoundError, SchemaError, UnsupportedVersionError
from ..models.preprocess import Preprocessing
from .schema import validate_manifest
from ..models.taps import Tap
from ..version import __version__

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "ModelRecord",
    "TapRecord",
    "SourceRecord",
    "FileRecord",
    "Manifest",
    "read_manifest",
    "content_digest",
    "required_tensors",
    "now",
]

FORMAT_NAME = "sowmeta-bundle"
FORMAT_VERSION = "1.5"
MANIFEST_NAME = "sowmeta.json"
MAX_MANIFEST_BYTES = 64 << 20  # a 1000-class, 300-tap manifest is well under 1 MiB
_CODE_RE = re.compile(r"^(?!(?:timm|hf-hub):)[^:]*:")


def now() -> str:
    """The current UTC time as ISO 8601 with a Z, to the second (every file sowmeta writes records it)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ModelRecord:
    """Which model the statistics belong to.

    ``architecture`` is a name sowmeta's model registry resolves, or ``custom`` for a model
    built by the user's own code (``factory`` then says which, for information only: it is
    never imported). ``structure`` fingerprints the module tree (names, types, shapes), so a
    bundle is refused on another architecture even when the weights check is skipped.
    """

    architecture: str
    fingerprint: str
    num_classes: int
    labels: list[str]
    weights: str | None = None
    fused: bool = False
    base_model: str | None = None
    structure: str | None = None
    factory: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None


@dataclass(frozen=True)
class TapRecord:
    """A tap, its channel count, the axis of its feature that holds the channels, and the leading token positions left out."""

    name: str
    module: str
    position: str
    kind: str
    channels: int
    axis: int = 1
    prefix_tokens: int = 0

    @property
    def tap(self) -> Tap:
        return Tap(self.name, self.module, self.position, self.kind, self.axis, self.prefix_tokens)  # type: ignore[arg-type]


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
    compression: dict[str, Any] | None = None  # (1.2) how the sampled image files were stored; None: not recorded
    privacy: dict[str, Any] | None = None  # (1.5) the differential-privacy release (docs/privacy.md); None: none


@dataclass(frozen=True)
class FileRecord:
    """One safetensors file of the bundle."""

    name: str
    sha256: str
    size: int
    tensors: list[str]


def _pick(record: type, data: dict[str, Any]) -> Any:
    names = record.__dataclass_fields__  # type: ignore[attr-defined]
    return record(**{k: v for k, v in data.items() if k in names})


def content_digest(d: dict[str, Any], version: str = FORMAT_VERSION) -> str:
    """sha256 of a manifest's content except ``files``, in the canonical form of format ``version``: stored inside every data file.

    ``files`` records each data file's sha256, and each data file records this digest of the
    rest, so no byte of the manifest can change unnoticed (docs/format.md, "Integrity"). From
    1.4 the form is RFC 8785 (JSON Canonicalization Scheme), the same in every language; 1.1 to
    1.3 used Python's ``json.dumps`` with sorted keys, which is kept for them.
    """
    rest = {k: v for k, v in d.items() if k != "files"}
    if _minor(version) >= 4:
        return hashlib.sha256(canonical_json(rest)).hexdigest()
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()


def _minor(version: str) -> int:
    major, _, minor = version.partition(".")
    return int(minor) if major == "1" and minor.isdigit() else 0


TENSOR_PARTS = ("mean", "var", "global_mean", "global_var")
OPTIONAL_PARTS = ("image_var",)


def required_tensors(taps: list[str]) -> list[str]:
    """Every tensor name a bundle with these taps must hold."""
    return ["counts", *(f"{t}/{part}" for t in taps for part in TENSOR_PARTS)]


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
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)  # the JSON as read, for the digest
    source_sha256: str | None = field(default=None, compare=False, repr=False)  # of the file ``raw`` was parsed from

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
    def from_dict(cls, d: dict[str, Any], *, path: str | None = None, source_sha256: str | None = None) -> Manifest:
        """Parse and check a manifest; refuses newer major versions, accepts newer minor ones.

        ``source_sha256``: of the file ``d`` was parsed from, unchanged since (names the content in the caches).
        """
        where = path or "manifest"
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise SchemaError(f"{where} is not a sowmeta bundle manifest (format != {FORMAT_NAME!r})", path=path, rule="format-version")
        version = str(d.get("format_version", ""))
        major, _, minor = version.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise SchemaError(f"{where}: format_version {version!r} is not MAJOR.MINOR", path=path, rule="format-version")
        if int(major) > 1:
            raise UnsupportedVersionError(
                f"bundle format {version} is newer than this sowmeta reads (1.x); upgrade with `pip install -U sowmeta`",
                version=version,
                path=path,
            )
        arch = d.get("model", {}).get("architecture") if isinstance(d.get("model"), dict) else None
        if isinstance(arch, str) and _CODE_RE.match(arch):
            raise SchemaError(
                f"{where} invalid at model/architecture: {arch!r} names Python code, which a manifest may never do; "
                f'set it to "custom" and pass --model {arch} yourself',
                path=path, rule="schema",
            )
        validate_manifest(d, path=path, source_sha256=source_sha256)
        known = {"format", "format_version", "model", "taps", "preprocessing", "source", "dtype", "files", "created", "tool"}
        manifest = cls(
            model=_pick(ModelRecord, d["model"]),
            taps=[_pick(TapRecord, t) for t in d["taps"]],
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            source=_pick(SourceRecord, d["source"]),
            dtype=d["dtype"],
            files=[_pick(FileRecord, f) for f in d["files"]],
            created=d["created"],
            tool_version=d["tool"]["version"],
            format_version=version,
            extra={k: v for k, v in d.items() if k not in known},
            raw=d,
            source_sha256=source_sha256,
        )
        manifest.check_consistency(path=path)
        return manifest

    def check_consistency(self, *, path: str | None = None) -> None:
        """Raise ``SchemaError`` for what the schema cannot say: counts and names that disagree (each names its rule)."""
        where = path or "manifest"

        def fail(message: str, rule: str) -> SchemaError:
            return SchemaError(f"{where}: {message}; the manifest is inconsistent", path=path, rule=rule)

        m = self.model
        if m.labels and len(m.labels) != m.num_classes:
            raise fail(f"{len(m.labels)} labels for {m.num_classes} classes", "labels")
        for what, names in (("tap", [t.name for t in self.taps]), ("file", [f.name for f in self.files])):
            dup = _first_repeat(names)
            if dup is not None:
                raise fail(f"{what} {dup!r} is listed twice", "unique-names")
        taps = set(self.tap_names)
        listed: dict[str, str] = {}
        for f in self.files:
            for t in f.tensors:
                if t in listed:
                    raise fail(f"tensor {t!r} is listed in {listed[t]} and {f.name}", "tensor-list")
                tap, _, part = t.rpartition("/")
                if t != "counts" and (tap not in taps or part not in TENSOR_PARTS + OPTIONAL_PARTS):
                    raise fail(f"{f.name} lists tensor {t!r}, which is neither counts nor a listed tap's mean, var, global_mean, global_var or image_var", "tensor-list")
                listed[t] = f.name
        missing = [t for t in required_tensors(self.tap_names) if t not in listed]
        if missing:
            raise SchemaError(f"{where}: tensor {missing[0]!r} is listed in no file; the manifest is incomplete", path=path, rule="tensor-list")
        spread = [t.name for t in self.taps if f"{t.name}/image_var" in listed]
        if spread and len(spread) != len(self.taps):
            without = next(t.name for t in self.taps if f"{t.name}/image_var" not in listed)
            raise fail(f"tap {spread[0]!r} has an image_var and tap {without!r} none (all taps or none)", "image-var-every-tap")
        empty = self.source.empty_classes
        bad = [k for k in empty if k >= m.num_classes]
        if bad:
            raise fail(f"empty class {bad[0]} does not exist ({m.num_classes} classes)", "empty-classes")
        if any(b <= a for a, b in zip(empty, empty[1:])):
            raise fail("source.empty_classes is not strictly ascending (each class once, in order)", "empty-classes")
        c = self.source.compression
        if c is not None and (c["jpeg_files"] > c["files_sampled"] or bool(c["jpeg_files"]) != (c["quality"] is not None)):
            raise fail(f"source/compression counts {c['jpeg_files']} JPEGs of {c['files_sampled']} sampled files with quality {c['quality']}",
                       "compression")

    @property
    def tap_names(self) -> list[str]:
        return [t.name for t in self.taps]

    @property
    def has_image_var(self) -> bool:
        """Every tap holds ``<tap>/image_var`` (1.3: the variance of the per-image means of each class; all taps or none)."""
        listed = {t for f in self.files for t in f.tensors}
        return bool(self.taps) and all(f"{t.name}/image_var" in listed for t in self.taps)

    @property
    def digest(self) -> str:
        """``content_digest`` of this manifest: of the JSON as it was read (fields this reader does not know
        included), or, for a manifest made here, of what ``to_dict`` writes. A manifest read from a file
        seen before takes it from the cache (``verified.py``) instead of re-encoding the JSON."""
        if self.raw is None or self.source_sha256 is None:
            return content_digest(self.raw if self.raw is not None else self.to_dict(), self.format_version)
        from . import verified

        digest = verified.recall_digest(self.source_sha256)
        if digest is None:
            digest = content_digest(self.raw, self.format_version)
            verified.remember_digest(self.source_sha256, digest)
        return digest


def _first_repeat(names: list[str]) -> str | None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return None


def read_manifest(path: str | Path) -> Manifest:
    """Parse and check ``sowmeta.json`` of the bundle at ``path`` (a directory or the JSON file); no tensors read."""
    p = Path(path)
    mpath = p / MANIFEST_NAME if p.is_dir() or p.suffix != ".json" else p
    if not mpath.is_file():
        raise BundleNotFoundError(f"no bundle at {p} (no {MANIFEST_NAME}); pass a bundle directory or a registry name", path=str(p))
    try:
        size = mpath.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise SchemaError(f"{mpath} is {size:,} bytes, more than any manifest; the bundle is corrupt", path=str(mpath), rule="manifest-json")
        raw = mpath.read_bytes()
        data = parse_strict(raw)
        if not isinstance(data, dict):
            kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(data), "number")
            raise StrictJSONError(f"it is a JSON {kind}, not an object")
    except StrictJSONError as exc:
        raise SchemaError(f"{mpath} is not valid JSON ({exc}); the bundle is corrupt, fetch or collect it again", path=str(mpath),
                          rule="manifest-json") from None
    except OSError as exc:
        raise BundleNotFoundError(f"cannot read {mpath} ({exc.strerror or exc}); check its permissions", path=str(mpath)) from exc
    return Manifest.from_dict(data, path=str(mpath), source_sha256=hashlib.sha256(raw).hexdigest())
