"""Write the bundle-format conformance cases: small valid bundles, and invalid ones that each break one rule.

Run ``python tests/conformance/make_cases.py [OUT]`` (default: beside this script). The numbers are
made up (a fixed seed), the moments computed here in float64 with numpy from per-image features,
the files written here byte by byte (safetensors layout, JSON), so the cases follow docs/format.md
on their own; only the RFC 8785 canonical JSON of the 1.4 digest is sowmeta's. Every invalid case
is a valid bundle changed in one respect and sealed again (file sha256s, sizes, manifest digest)
wherever the rule it breaks allows, so that it breaks that one rule only. Each case directory
holds an ``expected.json``: ``{"valid": ..., "rule": ..., "description": ...}`` (valid cases add the
``manifest_sha256`` their files carry and their ``counts``). tests/conformance/README.md says how to use them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from sowmeta.bundle.canonical_json import canonical_json  # noqa: E402  (the one piece taken from sowmeta)

Tensors = dict[str, np.ndarray]
_CODES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64"}

# --- made-up statistics, computed from made-up features --------------------------------------------

TAPS = [  # name, module, position, kind, channels, axis, positions per image
    ("bn1", "bn1", "in", "bn-input", 2, 1, 4),
    ("fc:in", "fc", "in", "input", 3, 1, 1),
]
COUNTS = [4, 0, 3]  # class 1 has no images


def features(seed: int = 7) -> dict[str, list[np.ndarray]]:
    """Per tap, per class: features [images, channels, positions] (float64, made up)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    for name, _, _, _, c, _, p in TAPS:
        out[name] = [
            rng.normal(loc=(2.0 * k + np.arange(c))[None, :, None], scale=(0.5 + 0.25 * np.arange(c))[None, :, None], size=(n, c, p))
            for k, n in enumerate(COUNTS)
        ]
    return out


def moments(dtype: str, *, image_var: bool) -> Tensors:
    """Every tensor of a bundle: counts, and per tap mean, var (and image_var) [K, C], global_mean, global_var [C]."""
    np_dtype = np.dtype("<f4") if dtype == "float32" else np.dtype("<f2")
    t: Tensors = {"counts": np.array(COUNTS, dtype="<i8")}
    for name, _, _, _, c, _, _ in TAPS:
        per_class = features()[name]
        mean = np.zeros((len(COUNTS), c))
        var = np.zeros((len(COUNTS), c))
        spread = np.zeros((len(COUNTS), c))
        for k, x in enumerate(per_class):
            if len(x):
                mean[k] = x.mean(axis=(0, 2))
                var[k] = ((x - mean[k][None, :, None]) ** 2).mean(axis=(0, 2))
                own = x.mean(axis=2)  # each image's own mean
                spread[k] = ((own - own.mean(axis=0)) ** 2).mean(axis=0)
        every = np.concatenate([x for x in per_class if len(x)])
        g_mean = every.mean(axis=(0, 2))
        g_var = ((every - g_mean[None, :, None]) ** 2).mean(axis=(0, 2))
        parts = {"mean": mean, "var": var, "global_mean": g_mean, "global_var": g_var}
        if image_var:
            parts["image_var"] = spread
        for part, value in parts.items():
            t[f"{name}/{part}"] = value.astype(np_dtype)
    return t


# --- the manifest --------------------------------------------------------------------------------


def manifest(version: str = "1.4", *, dtype: str = "float32") -> dict[str, Any]:
    """A manifest of ``version`` for the made-up statistics (``files`` filled in when written)."""
    minor = int(version.split(".")[1])
    model: dict[str, Any] = {
        "architecture": "conformance-net", "weights": None,
        "fingerprint": "sha256:" + hashlib.sha256(b"conformance-net weights").hexdigest(),
        "num_classes": len(COUNTS), "labels": ["cat", "dog", "bird"], "fused": False, "base_model": None,
    }
    if minor >= 1:
        model.update(structure="sha256:" + hashlib.sha256(b"conformance-net modules").hexdigest(), factory=None)
    taps = []
    for name, module, position, kind, c, axis, _ in TAPS:
        tap: dict[str, Any] = {"name": name, "module": module, "position": position, "kind": kind, "channels": c}
        if minor >= 1:
            tap["axis"] = axis
        taps.append(tap)
    source: dict[str, Any] = {
        "scenario": "A", "collector": "after-training", "data": "made-up", "images": sum(COUNTS),
        "empty_classes": [k for k, n in enumerate(COUNTS) if n == 0], "images_per_class_limit": None,
        "skipped_images": 0, "rejected_seeds": [],
    }
    if minor >= 2:
        source["compression"] = {"files_sampled": 2, "jpeg_files": 1, "quality": 90, "subsampling": "4:2:0", "width": 8, "height": 8}
    return {
        "format": "sowmeta-bundle", "format_version": version, "model": model, "taps": taps,
        "preprocessing": {"crop": 8, "resize": None, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                          "interpolation": "bilinear", "source": "options"},
        "source": source, "dtype": dtype, "files": [], "created": "2026-12-01T00:00:00Z",
        "tool": {"name": "sowmeta", "version": "conformance"},
    }


def digest(m: dict[str, Any], version: str) -> str:
    """The manifest's content digest (docs/format.md, "Integrity"): RFC 8785 from 1.4, Python's json.dumps form before."""
    rest = {k: v for k, v in m.items() if k != "files"}
    if int(version.split(".")[1]) >= 4:
        return hashlib.sha256(canonical_json(rest)).hexdigest()
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()


# --- safetensors, byte by byte ---------------------------------------------------------------------


def encode(tensors: Tensors, metadata: dict[str, str]) -> tuple[dict[str, Any], bytes]:
    """A safetensors header (as a dict) and data section for ``tensors``, in the order given."""
    header: dict[str, Any] = {"__metadata__": metadata}
    data = b""
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": _CODES[a.dtype], "shape": list(a.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def pack(header: dict[str, Any] | bytes, data: bytes) -> bytes:
    """The file: 8-byte little-endian header length, the header JSON padded with spaces to 8 bytes, the data."""
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


# --- a case ----------------------------------------------------------------------------------------

HeaderEdit = Callable[[str, dict[str, Any], bytes], tuple[dict[str, Any] | bytes, bytes]]


@dataclass
class Case:
    """A bundle to write: manifest, tensors per file, and the changes that make it invalid."""

    name: str
    description: str
    rule: str | None = None  # the rule an invalid case breaks
    version: str = "1.4"
    dtype: str = "float32"
    image_var: bool = True
    shards: list[list[str]] | None = None  # tensor names per file (default: one file, every tensor)
    edit_manifest: Callable[[dict[str, Any]], None] | None = None  # before sealing
    edit_tensors: Callable[[Tensors], None] | None = None
    edit_file: HeaderEdit | None = None  # (file name, header, data) -> (header or raw header bytes, data)
    after_seal: Callable[[dict[str, Any]], None] | None = None  # the manifest, after sealing: breaks a seal
    manifest_bytes: Callable[[dict[str, Any]], bytes] | None = None  # write the manifest's text yourself
    drop_file: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def write(case: Case, out: Path) -> None:
    m = manifest(case.version, dtype=case.dtype)
    tensors = moments(case.dtype, image_var=case.image_var and int(case.version.split(".")[1]) >= 3)
    if case.edit_tensors:
        case.edit_tensors(tensors)
    shards = case.shards or [list(tensors)]
    names = ["stats.safetensors"] if len(shards) == 1 else [f"stats-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    m["files"] = [{"name": n, "sha256": "", "size": 0, "tensors": sorted(keys)} for n, keys in zip(names, shards)]
    if case.edit_manifest:
        case.edit_manifest(m)
    sealed = digest(m, "1.3" if case.extra.get("legacy_digest") else case.version)
    folder = out / case.name
    folder.mkdir(parents=True)
    for i, (fname, keys) in enumerate(zip(names, shards)):
        meta = {"format": "sowmeta-bundle", "format_version": case.version, "shard": f"{i + 1}/{len(shards)}"}
        if case.version != "1.0":
            meta["manifest_sha256"] = sealed
        header, data = encode({k: tensors[k] for k in keys}, meta)
        raw_header: dict[str, Any] | bytes = header
        if case.edit_file:
            raw_header, data = case.edit_file(fname, header, data)
        body = pack(raw_header, data)
        entry = next(f for f in m["files"] if f["name"] == fname)
        entry.update(sha256=hashlib.sha256(body).hexdigest(), size=len(body))
        if not (case.drop_file and i == 0):
            (folder / fname).write_bytes(body)
    if case.after_seal:
        case.after_seal(m)
    text = case.manifest_bytes(m) if case.manifest_bytes else (json.dumps(m, indent=2, ensure_ascii=False) + "\n").encode()
    (folder / "sowmeta.json").write_bytes(text)
    expected: dict[str, Any] = {"valid": case.rule is None, "rule": case.rule, "description": case.description}
    if case.rule is None:  # what a reader of a valid case finds: the digest its files carry (1.1+), and the counts
        expected.update(manifest_sha256=None if case.version == "1.0" else sealed, counts=tensors["counts"].tolist())
    (folder / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")


# --- the cases ---------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit setting ``a/b/0/c`` of a manifest."""
    def edit(m: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = m
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


def _both(*edits: Callable[[Any], None]) -> Callable[[Any], None]:
    def edit(x: Any) -> None:
        for e in edits:
            e(x)
    return edit


def _tensor(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Tensors], None]:
    def edit(t: Tensors) -> None:
        t[name] = change(t[name].copy())
    return edit


def _at(index: tuple[int, ...], value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(a: np.ndarray) -> np.ndarray:
        a[index] = value
        return a
    return change


def _header(change: Callable[[dict[str, Any]], None]) -> HeaderEdit:
    def edit(fname: str, header: dict[str, Any], data: bytes) -> tuple[dict[str, Any] | bytes, bytes]:
        header = deepcopy(header)
        change(header)
        return header, data
    return edit


def _data(change: Callable[[bytes], bytes]) -> HeaderEdit:
    return lambda fname, header, data: (header, change(data))


def _json_with(replace: str, by: str) -> Callable[[dict[str, Any]], bytes]:
    """The manifest's usual text with one piece of text replaced (JSON that json.dumps would never write)."""
    def text(m: dict[str, Any]) -> bytes:
        plain = json.dumps(m, indent=2, ensure_ascii=False) + "\n"
        assert plain.count(replace) == 1, replace
        return plain.replace(replace, by).encode()
    return text


def _swap_rows(name: str) -> Callable[[Tensors], None]:
    """Give class 1 (no images) the rows of class 0."""
    def edit(t: Tensors) -> None:
        t[name] = t[name].copy()
        t[name][1] = t[name][0]
    return edit


def _extra_tensor(fname: str, header: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    header = deepcopy(header)
    raw = np.zeros(2, dtype="<f4").tobytes()
    header["layer1.0.bn1/var"] = {"dtype": "F32", "shape": [2], "data_offsets": [len(data), len(data) + len(raw)]}
    return header, data + raw


def _drop_tensor(key: str) -> HeaderEdit:
    """The file without ``key`` (its bytes removed, later offsets moved down): valid safetensors, one tensor short."""
    def edit(fname: str, header: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        header = deepcopy(header)
        start, end = header.pop(key)["data_offsets"]
        for k, v in header.items():
            if k != "__metadata__" and v["data_offsets"][0] >= end:
                v["data_offsets"] = [o - (end - start) for o in v["data_offsets"]]
        return header, data[:start] + data[end:]
    return edit


def _duplicate_header_key(fname: str, header: dict[str, Any], data: bytes) -> tuple[bytes, bytes]:
    text = json.dumps(header, separators=(",", ":"))
    entry = json.dumps(header["counts"], separators=(",", ":"))
    return text.replace('"counts":' + entry, '"counts":' + entry + ',"counts":' + entry, 1).encode(), data


def _lone_surrogate(m: dict[str, Any]) -> bytes:
    return _json_with('"bird"', '"bird\\ud800"')(m)


def _alias(key: str, of: str) -> HeaderEdit:
    """``key`` made to name ``of``'s bytes (its own removed, later offsets moved down): overlapping offsets, nothing else wrong."""
    def edit(fname: str, header: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        header = deepcopy(header)
        start, end = header[key]["data_offsets"]
        for k, v in header.items():
            if k != "__metadata__" and v["data_offsets"][0] >= end:
                v["data_offsets"] = [o - (end - start) for o in v["data_offsets"]]
        header[key]["data_offsets"] = list(header[of]["data_offsets"])
        return header, data[:start] + data[end:]
    return edit


def _gap_before(key: str, size: int) -> HeaderEdit:
    """``size`` unused bytes inserted before ``key`` (the last tensor), its offsets moved up."""
    def edit(fname: str, header: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        header = deepcopy(header)
        start, _ = header[key]["data_offsets"]
        header[key]["data_offsets"] = [o + size for o in header[key]["data_offsets"]]
        return header, data[:start] + b"\0" * size + data[start:]
    return edit


# source.privacy (1.5) of a bundle released with (8, 1e-5)-differential privacy
PRIVACY = {"mechanism": "gaussian", "neighbours": "add-or-remove-one-image", "epsilon": 8.0, "delta": 1e-05, "clip": 1.5,
           "clip_reference": "batchnorm-running-statistics", "noise_multiplier": 0.6378, "sensitivity": 2.6457513110645907,
           "accountant": {"name": "opacus.rdp", "version": "1.6.0"}}

VALID = [
    Case("1.4-float32", "three classes (one without images), two taps, image_var, one file"),
    Case("1.4-float16-sharded", "float16 statistics in two files", dtype="float16",
         shards=[["counts", "bn1/mean", "bn1/var", "bn1/global_mean", "bn1/global_var", "bn1/image_var"],
                 ["fc:in/mean", "fc:in/var", "fc:in/global_mean", "fc:in/global_var", "fc:in/image_var"]]),
    Case("1.4-no-image-var", "no tap holds image_var (it is optional)", image_var=False),
    Case("1.4-repeated-labels", "two classes share a label, as ImageNet's two cranes do", edit_manifest=_set("model/labels", ["crane", "crane", "bird"])),
    Case("1.4-canonical-json", "non-ASCII labels and an unknown field whose numbers RFC 8785 writes its own way (1.0 as 1, 1e21 as 1e+21)",
         edit_manifest=_both(_set("model/labels", ["chat \u00e9", "\u72ac", "\U0001f426 \u20ac"]),
                             _set("x-extension", {"\u00e9": 1.0, "b": [1e21, 0.000001, 1e-7, -0.0], "a\u20ac": "tab\there"}))),
    Case("1.4-token-taps", "taps of [N, L, D] features: channel axis -1 and a left-out class token",
         edit_manifest=_both(_set("taps/0/axis", -1), _set("taps/0/prefix_tokens", 1), _set("taps/0/kind", "ln-input"))),
    Case("1.5-privacy", "format 1.5: statistics released with differential privacy (source.privacy)", version="1.5",
         edit_manifest=_set("source/privacy", PRIVACY)),
    Case("1.3-legacy-digest", "format 1.3: the digest is Python's json.dumps form (ASCII escapes)", version="1.3",
         edit_manifest=_set("model/labels", ["chat \u00e9", "dog", "bird"])),
    Case("1.2-compression", "format 1.2: source.compression, no image_var", version="1.2"),
    Case("1.1-structure", "format 1.1: model.structure, taps[].axis, manifest digest in the files", version="1.1"),
    Case("1.0-first", "format 1.0: no manifest digest in the files, no axis", version="1.0"),
]

INVALID = [
    # manifest-json
    Case("manifest-json--duplicate-key", "the key dtype appears twice in the manifest", "manifest-json",
         manifest_bytes=_json_with('"dtype": "float32",', '"dtype": "float32",\n  "dtype": "float32",')),
    Case("manifest-json--nan", "NaN in preprocessing.mean", "manifest-json", manifest_bytes=_json_with("0.485,", "NaN,")),
    Case("manifest-json--lone-surrogate", "a label holding a lone UTF-16 surrogate", "manifest-json", manifest_bytes=_lone_surrogate),
    Case("manifest-json--big-integer", "an integer beyond 2^53", "manifest-json", manifest_bytes=_json_with('"skipped_images": 0', '"skipped_images": 9007199254740993')),
    Case("manifest-json--not-utf8", "a label in Latin-1, not UTF-8", "manifest-json", manifest_bytes=lambda m: _json_with('"cat"', '"c\u00e9"')(m).replace(b"c\xc3\xa9", b"c\xe9")),
    Case("manifest-json--array", "the manifest is a JSON array", "manifest-json", manifest_bytes=lambda m: b"[]\n"),
    # format-version
    Case("format-version--major-2", "format_version 2.0 (a reader of 1.x refuses it)", "format-version", edit_manifest=_set("format_version", "2.0")),
    Case("format-version--not-a-version", "format_version 1.x", "format-version", edit_manifest=_set("format_version", "1.x")),
    Case("format-version--other-format", "format names another format", "format-version", edit_manifest=_set("format", "other-bundle")),
    # schema
    Case("schema--no-taps", "the manifest has no taps", "schema", edit_manifest=lambda m: m.pop("taps")),
    Case("schema--code-architecture", "model.architecture names Python code", "schema", edit_manifest=_set("model/architecture", "os:system")),
    Case("schema--slash-in-tap-name", "a tap name holds '/'", "schema", edit_manifest=_set("taps/0/name", "b/n1")),
    Case("schema--zero-channels", "a tap with 0 channels", "schema", edit_manifest=_set("taps/0/channels", 0)),
    Case("schema--privacy-epsilon-zero", "source.privacy with epsilon 0, which is no budget", "schema", version="1.5",
         edit_manifest=_set("source/privacy", {**PRIVACY, "epsilon": 0})),
    Case("schema--file-name-path", "a file name with a directory part", "schema",
         after_seal=lambda m: m["files"][0].update(name="../stats.safetensors")),
    # labels
    Case("labels--too-few", "two labels for three classes", "labels", edit_manifest=_set("model/labels", ["cat", "dog"])),
    # unique-names
    Case("unique-names--tap-twice", "a tap listed twice", "unique-names", edit_manifest=lambda m: m["taps"].append(dict(m["taps"][0]))),
    # tensor-list
    Case("tensor-list--missing", "bn1/var is listed in no file (and the file lacks it)", "tensor-list",
         edit_manifest=lambda m: m["files"][0]["tensors"].remove("bn1/var"), edit_file=_drop_tensor("bn1/var")),
    Case("tensor-list--unknown-name", "a listed tensor that belongs to no tap", "tensor-list",
         edit_manifest=lambda m: m["files"][0]["tensors"].append("layer1.0.bn1/var"), edit_file=_extra_tensor),
    Case("tensor-list--listed-twice", "counts listed twice", "tensor-list", edit_manifest=lambda m: m["files"][0]["tensors"].append("counts")),
    # image-var-every-tap
    Case("image-var-every-tap--one-tap", "image_var for bn1 only", "image-var-every-tap",
         edit_tensors=lambda t: t.pop("fc:in/image_var")),
    # empty-classes
    Case("empty-classes--out-of-range", "an empty class 5 of 3", "empty-classes", edit_manifest=_set("source/empty_classes", [1, 5])),
    Case("empty-classes--repeated", "class 1 listed twice", "empty-classes", edit_manifest=_set("source/empty_classes", [1, 1])),
    # compression
    Case("compression--more-jpegs-than-files", "5 JPEGs of 2 sampled files", "compression", version="1.2", edit_manifest=_set("source/compression/jpeg_files", 5)),
    # file-present
    Case("file-present--missing", "the listed data file is not there", "file-present", drop_file=True),
    # file-checksum
    Case("file-checksum--sha256", "the data file's sha256 differs from the record", "file-checksum",
         after_seal=lambda m: m["files"][0].update(sha256="0" * 64)),
    Case("file-checksum--size", "the data file's size differs from the record", "file-checksum", after_seal=lambda m: m["files"][0].update(size=m["files"][0]["size"] + 8)),
    # safetensors
    Case("safetensors--overlap", "bn1/global_var's offsets are bn1/global_mean's (overlapping offsets)", "safetensors",
         edit_file=_alias("bn1/global_var", "bn1/global_mean")),
    Case("safetensors--trailing-bytes", "8 bytes after the last tensor", "safetensors", edit_file=_data(lambda d: d + b"\0" * 8)),
    Case("safetensors--gap", "4 unused bytes before the last tensor", "safetensors", edit_file=_gap_before("fc:in/image_var", 4)),
    Case("safetensors--length-mismatch", "counts claims 16 bytes for 3 int64 values", "safetensors",
         edit_file=_header(lambda h: h["counts"].update(shape=[2]))),
    Case("safetensors--truncated", "the file ends after its header: the tensors run past its end", "safetensors",
         edit_file=lambda f, h, d: (h, b"")),
    Case("safetensors--duplicate-key", "the header names counts twice", "safetensors", edit_file=_duplicate_header_key),
    Case("safetensors--unknown-dtype", "a tensor of dtype F33", "safetensors", edit_file=_header(lambda h: h["counts"].update(dtype="F33"))),
    Case("safetensors--metadata-not-strings", "a __metadata__ value that is a number", "safetensors",
         edit_file=_header(lambda h: h["__metadata__"].update(shard=1))),
    # file-metadata
    Case("file-metadata--version", "the file says format version 1.3 in a 1.4 bundle", "file-metadata",
         edit_file=_header(lambda h: h["__metadata__"].update(format_version="1.3"))),
    # file-digest
    Case("file-digest--manifest-edited", "source.data changed after the files were written", "file-digest",
         after_seal=_set("source/data", "something else")),
    Case("file-digest--legacy-form-in-1.4", "a 1.4 bundle whose files carry the 1.3 (json.dumps) digest", "file-digest",
         edit_manifest=_set("model/labels", ["chat \u00e9", "dog", "bird"]), extra={"legacy_digest": True}),
    # file-tensors
    Case("file-tensors--extra", "the file holds a tensor the manifest does not list", "file-tensors", edit_file=_extra_tensor),
    Case("file-tensors--missing", "the file lacks bn1/var, which the manifest lists there", "file-tensors", edit_file=_drop_tensor("bn1/var")),
    # tensor-shape
    Case("tensor-shape--counts-rows", "counts has 4 rows for 3 classes", "tensor-shape",
         edit_tensors=_tensor("counts", lambda a: np.append(a, 0).astype("<i8"))),
    Case("tensor-shape--dtype", "bn1/mean stored as F16 in a float32 bundle", "tensor-shape",
         edit_tensors=_tensor("bn1/mean", lambda a: a.astype("<f2"))),
    # counts
    Case("counts--zero-not-listed", "class 1 has 0 images but source.empty_classes is empty", "counts", edit_manifest=_set("source/empty_classes", [])),
    Case("counts--listed-not-zero", "class 0 has images but is listed in source.empty_classes", "counts", edit_manifest=_set("source/empty_classes", [0, 1])),
    Case("counts--sum", "source.images is 8, the counts sum to 7", "counts", edit_manifest=_set("source/images", 8)),
    Case("counts--negative", "a negative count (the sum still matches source.images)", "counts",
         edit_tensors=_tensor("counts", lambda a: np.array([8, 0, -1], dtype="<i8"))),
    # finite
    Case("finite--nan-mean", "a NaN in bn1/mean", "finite", edit_tensors=_tensor("bn1/mean", _at((2, 1), np.nan))),
    Case("finite--negative-var", "a negative value in fc:in/var", "finite", edit_tensors=_tensor("fc:in/var", _at((0, 2), -0.5))),
    Case("finite--infinite-global", "an infinite bn1/global_var", "finite", edit_tensors=_tensor("bn1/global_var", _at((0,), np.inf))),
    # empty-rows
    Case("empty-rows--mean", "class 1 has no images but the rows of class 0", "empty-rows", edit_tensors=_swap_rows("bn1/mean")),
    # image-var-bound
    Case("image-var-bound--larger", "bn1/image_var of class 0 twice its var", "image-var-bound",
         edit_tensors=lambda t: t.update({"bn1/image_var": (t["bn1/var"] * 2).astype("<f4")})),
    # global-pooling
    Case("global-pooling--var", "bn1/global_var 20 % above the pooled rows", "global-pooling",
         edit_tensors=_tensor("bn1/global_var", lambda a: (a * 1.2).astype("<f4"))),
    Case("global-pooling--mean", "fc:in/global_mean the plain average of the class rows, not count-weighted", "global-pooling",
         edit_tensors=lambda t: t.update({"fc:in/global_mean": t["fc:in/mean"][[0, 2]].mean(axis=0).astype("<f4")})),
]


def main(out: Path) -> None:
    for kind, cases in (("valid", VALID), ("invalid", INVALID)):
        root = out / kind
        if root.exists():
            shutil.rmtree(root)
        for case in cases:
            write(case, root)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
