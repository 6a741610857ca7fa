"""Bundle format v1: round trip, schema, sliced loading, versions, corruption, model checks."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sowmeta.bundle import Bundle, ModelRecord, SourceRecord
from sowmeta.errors import (
    BundleNotFoundError,
    ChecksumError,
    CorruptBundleError,
    ModelMismatchError,
    OutputExistsError,
    SchemaError,
    UnsupportedVersionError,
)
from sowmeta.models import fingerprint
from sowmeta.models.preprocess import Preprocessing
from sowmeta.bundle.schema import validate_manifest
from sowmeta.moments.class_moments import ClassMoments
from sowmeta.models.taps import resolve_taps, tap_hooks

from conftest import tiny_net

K = 6


def make_bundle(model=None, classes: int = K, seed: int = 0) -> Bundle:
    model = model or tiny_net(classes)
    taps = resolve_taps(model, "bn-inputs") + resolve_taps(model, "fc:in")
    moments: dict[str, ClassMoments] = {}

    def rec(tap, x):
        moments.setdefault(tap.name, ClassMoments.zeros(classes, x.shape[1])).update(x.detach(), labels)

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(3)
    labels[labels == classes - 1] = 0  # the last class stays empty
    with torch.no_grad(), tap_hooks(model, taps, rec):
        model(torch.rand(len(labels), 3, 8, 8, generator=g))
    record = ModelRecord("conftest:tiny_net", fingerprint(model), classes, [f"class{i}" for i in range(classes)])
    return Bundle.from_moments(
        moments, taps, model=record, preprocessing=Preprocessing(crop=8), source=SourceRecord("A", "after-training", "random", 0)
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return make_bundle().save(tmp_path / "b")


def test_round_trip_and_layout(saved: Path):
    b = make_bundle()
    loaded = Bundle.load(saved)
    assert [t.name for t in loaded.manifest.taps] == ["bn1", "bn2", "fc:in"]
    for name, s in b.stats.items():
        torch.testing.assert_close(loaded.stats[name].mean, s.mean)
        torch.testing.assert_close(loaded.stats[name].var, s.var)
        torch.testing.assert_close(loaded.stats[name].global_var, s.global_var)
    assert loaded.counts.tolist() == [6, 3, 3, 3, 3, 0]
    assert loaded.manifest.source.empty_classes == [K - 1]
    files = sorted(p.name for p in saved.iterdir())
    assert files == ["sowmeta.json", "stats.safetensors"]
    with safe_open(str(saved / "stats.safetensors"), framework="pt") as f:
        assert f.metadata()["format"] == "sowmeta-bundle" and f.metadata()["format_version"] == "1.5"
        assert f.metadata()["manifest_sha256"] == Bundle.read_manifest(saved).digest
        assert f.get_tensor("bn2/mean").shape == (K, 12) and f.get_tensor("bn2/mean").dtype == torch.float32
        assert f.get_tensor("counts").dtype == torch.int64
    manifest = json.loads((saved / "sowmeta.json").read_text())
    import hashlib

    assert manifest["files"][0]["sha256"] == hashlib.sha256((saved / "stats.safetensors").read_bytes()).hexdigest()
    assert manifest["model"]["fingerprint"].startswith("sha256:")


def test_float16_and_sharding(tmp_path: Path):
    b = make_bundle()
    p = b.save(tmp_path / "sharded", dtype="float16", shard_bytes=200)
    names = sorted(f.name for f in Bundle.read_manifest(p).files)
    assert len(names) > 2 and names[0].startswith("stats-00001-of-")
    loaded = Bundle.load(p, classes=[4, 1])
    torch.testing.assert_close(loaded.stats["bn2"].mean, b.stats["bn2"].mean[[4, 1]].half().float())


def test_image_var_round_trips_by_rows_and_is_optional(saved: Path, tmp_path: Path):
    b = make_bundle()
    assert Bundle.read_manifest(saved).has_image_var
    part = Bundle.load(saved, classes=[4, 1])
    for name, s in b.stats.items():
        torch.testing.assert_close(part.stats[name].image_var, s.image_var[[4, 1]], rtol=0, atol=0)
        assert bool((s.image_var <= s.var + 1e-6).all())
    # a bundle without image variances (as before 1.3) saves without them and loads with None
    for s in b.stats.values():
        s.image_var = None
    old = Bundle.load(b.save(tmp_path / "old"))
    assert not old.manifest.has_image_var and all(s.image_var is None for s in old.stats.values())
    with safe_open(str(tmp_path / "old" / "stats.safetensors"), framework="pt") as f:
        assert not any(k.endswith("/image_var") for k in f.keys())


def test_negative_image_var_is_refused(saved: Path):
    def negate(h: dict) -> None:
        start, _ = h["bn2/image_var"]["data_offsets"]
        negate.at = start

    _with_header(saved / "stats.safetensors", negate)
    raw = bytearray((saved / "stats.safetensors").read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    off = 8 + n + negate.at + 4 * 12  # class 1, channel 0
    raw[off : off + 4] = struct.pack("<f", -1.0)
    (saved / "stats.safetensors").write_bytes(bytes(raw))
    Bundle.load(saved, classes=[0], verify=False)  # other rows are fine
    with pytest.raises(CorruptBundleError, match=r"tap 'bn2', class 1, channel 0: image_var is -1.0"):
        Bundle.load(saved, classes=[1], verify=False)


def test_existing_output_is_refused(saved: Path):
    with pytest.raises(OutputExistsError, match="--overwrite"):
        make_bundle().save(saved)
    make_bundle(seed=3).save(saved, overwrite=True)
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch):
    import safetensors.torch

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        make_bundle().save(tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_sliced_loading_touches_only_the_asked_rows(saved: Path):
    """Overwrite every other class's rows on disk with NaN: the asked rows must still load intact."""
    full = Bundle.load(saved)
    path = saved / "stats.safetensors"
    raw = bytearray(path.read_bytes())
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + hlen])
    keep = [1, 3]
    for key, info in header.items():
        if key == "__metadata__" or not key.endswith(("/mean", "/var")) or key.endswith(("global_mean", "global_var")):
            continue
        start, end = info["data_offsets"]
        rows, cols = info["shape"]
        row_bytes = (end - start) // rows
        for r in range(rows):
            if r not in keep:
                off = 8 + hlen + start + r * row_bytes
                raw[off : off + row_bytes] = struct.pack("<f", float("nan")) * cols
    path.write_bytes(bytes(raw))
    part = Bundle.load(saved, classes=[3, 1], verify=False)
    assert part.classes == [3, 1]
    for name in full.stats:
        torch.testing.assert_close(part.stats[name].mean, full.stats[name].mean[[3, 1]])
        torch.testing.assert_close(part.stats[name].var, full.stats[name].var[[3, 1]])
    assert part.counts.tolist() == [3, 3]
    with pytest.raises(ChecksumError):
        Bundle.load(saved)


def test_schema_accepts_valid_and_rejects_broken(saved: Path):
    good = json.loads((saved / "sowmeta.json").read_text())
    validate_manifest(good)
    broken = [
        lambda d: d.pop("taps"),
        lambda d: d["taps"][0].update(channels=0),
        lambda d: d["model"].update(fingerprint="md5:abc"),
        lambda d: d["files"][0].update(sha256="xyz"),
        lambda d: d["source"].update(scenario="D"),
        lambda d: d.update(dtype="int8"),
        lambda d: d["preprocessing"].update(mean=[0.5]),
        lambda d: d["taps"][0].update(name="a/b"),
    ]
    for breaker in broken:
        d = json.loads(json.dumps(good))
        breaker(d)
        with pytest.raises(SchemaError):
            validate_manifest(d)


def _rewrite_as_writer(saved: Path, d: dict) -> None:
    """Write manifest ``d`` the way a (future) writer would: the data file carries the digest of the new content."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from sowmeta.bundle.manifest import content_digest

    f = saved / "stats.safetensors"
    save_file(load_file(str(f)), str(f), metadata={"format": "sowmeta-bundle", "format_version": d["format_version"], "shard": "1/1",
                                                    "manifest_sha256": content_digest(d)})
    d["files"][0].update(sha256=hashlib.sha256(f.read_bytes()).hexdigest(), size=f.stat().st_size)
    (saved / "sowmeta.json").write_text(json.dumps(d))


def test_versions_newer_minor_accepted_newer_major_refused(saved: Path):
    d = json.loads((saved / "sowmeta.json").read_text())
    d["format_version"] = "1.7"
    d["future_field"] = {"x": 1}
    _rewrite_as_writer(saved, d)
    b = Bundle.load(saved)
    assert b.manifest.format_version == "1.7" and b.manifest.extra == {"future_field": {"x": 1}}
    d["format_version"] = "2.0"
    (saved / "sowmeta.json").write_text(json.dumps(d))
    with pytest.raises(UnsupportedVersionError, match="newer than this sowmeta reads"):
        Bundle.load(saved)


def test_corrupt_and_truncated_files_give_typed_errors(saved: Path, tmp_path: Path):
    with pytest.raises(BundleNotFoundError):
        Bundle.load(tmp_path / "nowhere")
    data = (saved / "stats.safetensors").read_bytes()
    (saved / "stats.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumError, match="truncated"):
        Bundle.load(saved)
    with pytest.raises(CorruptBundleError):
        Bundle.load(saved, verify=False)
    (saved / "stats.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(CorruptBundleError):
        Bundle.load(saved, verify=False)
    (saved / "sowmeta.json").write_text("{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        Bundle.load(saved)


def test_check_against_models(saved: Path):
    b = Bundle.load(saved)
    b.check(tiny_net(K))
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        b.check(tiny_net(K, seed=5))
    wide = tiny_net(K)
    import torch.nn as nn

    wide.conv2 = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    wide.bn2 = nn.BatchNorm2d(10)
    wide.conv3 = nn.Conv2d(10, 12, 1)
    with pytest.raises(ModelMismatchError, match="'bn2': the bundle has 12 channels, the model gives 10") as e:
        b.check(wide)
    assert e.value.tap == "bn2"
    with pytest.raises(ModelMismatchError, match="outputs"):
        b.check(tiny_net(K + 1), check_weights=False)
    with pytest.raises(ModelMismatchError, match="no module"):
        b.check(nn.Sequential(nn.Conv2d(3, 4, 1)))


def test_sliced_loading_requests_only_the_asked_rows(saved: Path, monkeypatch):
    """Spy on the byte reads: per-class tensors are read only in the byte ranges of the asked classes' rows.

    The ranges are computed here from the file's header (json + struct, docs/format.md), not by the reader.
    """
    import json
    import struct

    from sowmeta.bundle import files as bundle_files

    f = saved / "stats.safetensors"
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = {k: v for k, v in json.loads(raw[8 : 8 + n]).items() if k != "__metadata__"}
    reads: list[tuple[int, int]] = []
    real = bundle_files.read_at

    def spy(file, offset, into):
        reads.append((offset, offset + len(into)))
        return real(file, offset, into)

    def spy_vector(fd, buffers, offset):  # adjacent ranges are read with one call: record each buffer's range
        at = offset
        for b in buffers:
            reads.append((at, at + len(b)))
            at += len(b)
        return real_vector(fd, buffers, offset)

    real_vector = os.preadv
    monkeypatch.setattr(bundle_files, "read_at", spy)
    monkeypatch.setattr(bundle_files.os, "preadv", spy_vector)
    part = Bundle.load(saved, classes=[4, 1, 2], verify=False)  # verifying reads every byte once (test_verified.py)
    rows_read: set[tuple[str, int]] = set()
    for start, stop in reads:
        if stop <= 8 + n:  # the header
            continue
        key, info = next((k, v) for k, v in header.items() if 8 + n + v["data_offsets"][0] <= start < 8 + n + v["data_offsets"][1])
        begin, end = (8 + n + o for o in info["data_offsets"])
        assert stop <= end, (key, start, stop)
        if key.endswith(("/global_mean", "/global_var")):
            assert (start, stop) == (begin, end), key  # read whole
            continue
        row = (end - begin) // info["shape"][0]
        assert (start - begin) % row == 0 and (stop - start) % row == 0, key
        rows_read |= {(key, r) for r in range((start - begin) // row, (stop - begin) // row)}
    per_class = [k for k in header if k.endswith(("/mean", "/var", "/image_var")) and "global" not in k]
    # counts is read whole (K int64s) to check that it agrees with the manifest; every other tensor only in the asked rows
    assert rows_read == {(k, r) for k in per_class for r in (1, 2, 4)} | {("counts", r) for r in range(K)}
    full = make_bundle()
    torch.testing.assert_close(part.stats["bn1"].var, full.stats["bn1"].var[[4, 1, 2]])
    assert part.counts.dtype == torch.int64 and part.counts.tolist() == [3, 3, 3]
    assert part.row(1) == 1 and part.row(4) == 0


@pytest.mark.parametrize("most", [1, 7, 1000])
def test_short_reads_are_finished_piece_by_piece(saved: Path, monkeypatch, most: int):
    """A read that returns fewer bytes than asked (allowed by POSIX) still fills every buffer exactly."""
    from sowmeta.bundle import files as bundle_files

    real = os.preadv

    def short(fd, buffers, offset):
        out, left = [], most
        for b in buffers:
            if left <= 0:
                break
            out.append(b[: min(len(b), left)])
            left -= len(out[-1])
        return real(fd, out, offset)

    monkeypatch.setattr(bundle_files.os, "preadv", short)
    full = make_bundle()
    for classes in (None, [4, 1, 2]):
        part = Bundle.load(saved, classes=classes)
        rows = list(range(K)) if classes is None else classes
        for name, stats in full.stats.items():
            torch.testing.assert_close(part.stats[name].mean, stats.mean[rows], rtol=0, atol=0)
            torch.testing.assert_close(part.stats[name].global_var, stats.global_var, rtol=0, atol=0)
        assert part.counts.tolist() == full.counts[rows].tolist()


def _with_header(path: Path, change) -> None:
    """Rewrite the safetensors header of ``path`` (json + struct), the tensor bytes left as they are."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * max(0, n - len(text))  # same length where it fits, so the data offsets stay true
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _resaved(path: Path, change) -> None:
    """Rewrite ``path`` as a valid safetensors file (the safetensors library writes it) with its tensors changed."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda f: f.write_bytes(f.read_bytes()[:-4]), "past the end of the file"),  # last tensor cut short
        (lambda f: f.write_bytes(f.read_bytes() + b"\0"), "1 bytes follow them"),  # a byte after the last tensor
        (lambda f: f.write_bytes(b"\xff" * 8 + f.read_bytes()[8:]), "header length 18446744073709551615 does not fit"),
        (lambda f: _with_header(f, lambda h: h["counts"].update(data_offsets=[0, 10**9])), "'counts' spans 1000000000 bytes"),
        (lambda f: _with_header(f, lambda h: h.pop("bn1/var")), "leaves a gap of 144 bytes"),
        (lambda f: _with_header(f, lambda h: h["bn1/var"].update(data_offsets=h["bn1/mean"]["data_offsets"])), "overlaps the tensor before it"),
        (lambda f: _with_header(f, lambda h: h["bn1/mean"].update(dtype="F16")), "'bn1/mean' spans 144 bytes, but F16"),
        (lambda f: _resaved(f, lambda t: t.pop("bn1/var")), "has no tensor 'bn1/var'"),
        (lambda f: _resaved(f, lambda t: t.update(extra=torch.zeros(2))), "holds 'extra', which the manifest does not list"),
        (lambda f: _resaved(f, lambda t: t.update({"bn1/mean": t["bn1/mean"].half()})), "'bn1/mean' is F16"),
        (lambda f: _resaved(f, lambda t: t.update({"bn2/image_var": t["bn2/image_var"][:, :11].contiguous()})), "'bn2/image_var' is F32 \\[6, 11\\]"),
    ],
)
def test_damaged_files_are_refused_without_verification(saved: Path, damage, message):
    damage(saved / "stats.safetensors")
    with pytest.raises(CorruptBundleError, match=message):
        Bundle.load(saved, classes=[1], verify=False)


def test_bad_class_selections_and_inconsistent_rows(saved: Path):
    from safetensors.torch import load_file, save_file

    from sowmeta.errors import ConfigError

    with pytest.raises(ConfigError, match="selects no class"):
        Bundle.load(saved, classes=[])
    with pytest.raises(ConfigError, match="class 6 does not exist"):
        Bundle.load(saved, classes=[0, K])
    with pytest.raises(ConfigError, match="not in this bundle"):
        Bundle.load(saved, taps=["nope"])
    f = saved / "stats.safetensors"
    tensors = load_file(str(f))
    tensors["counts"] = torch.zeros(K + 2, dtype=torch.int64)  # more rows than the manifest's classes
    save_file(tensors, str(f), metadata={"format": "sowmeta-bundle", "format_version": "1.5", "shard": "1/1"})
    with pytest.raises(CorruptBundleError, match=r"'counts' is I64 \[8\], the manifest says I64 \[6\]"):
        Bundle.load(saved, classes=[0], verify=False)


def test_sharded_files_are_indexed_by_the_manifest_and_identify_themselves(tmp_path: Path):
    b = make_bundle()
    p = b.save(tmp_path / "sharded", shard_bytes=300)
    manifest = Bundle.read_manifest(p)
    n = len(manifest.files)
    listed = [t for f in manifest.files for t in f.tensors]
    assert n >= 3 and sorted(listed) == sorted(set(listed))  # every tensor in exactly one file
    assert set(listed) == {"counts"} | {f"{t}/{s}" for t in ("bn1", "bn2", "fc:in") for s in ("mean", "var", "global_mean", "global_var", "image_var")}
    for i, f in enumerate(manifest.files, start=1):
        with safe_open(str(p / f.name), framework="pt") as h:
            assert sorted(h.keys()) == sorted(f.tensors)
            assert h.metadata() == {"format": "sowmeta-bundle", "format_version": "1.5", "shard": f"{i}/{n}", "manifest_sha256": manifest.digest}
        assert f.name == f"stats-{i:05d}-of-{n:05d}.safetensors"
    whole = Bundle.load(p)
    for name, s in b.stats.items():
        torch.testing.assert_close(whole.stats[name].mean, s.mean)


def test_docs_format_reader_recipe(tmp_path: Path):
    """A reader written from docs/format.md alone (json + struct, no safetensors) gets the same numbers."""
    import hashlib

    b = make_bundle()
    p = b.save(tmp_path / "r", shard_bytes=300)
    manifest = json.loads((p / "sowmeta.json").read_text())
    assert manifest["format"] == "sowmeta-bundle" and manifest["format_version"].split(".")[0] == "1"
    where = {t: f for f in manifest["files"] for t in f["tensors"]}

    def read_row(key: str, k: int | None) -> list:
        f = where[key]
        raw = (p / f["name"]).read_bytes()
        assert len(raw) == f["size"] and hashlib.sha256(raw).hexdigest() == f["sha256"]
        (n,) = struct.unpack("<Q", raw[:8])
        info = json.loads(raw[8 : 8 + n])[key]
        code, size = {"F32": ("f", 4), "F16": ("e", 2), "I64": ("q", 8)}[info["dtype"]]
        start, end = info["data_offsets"]
        width = info["shape"][1] if len(info["shape"]) == 2 else 1
        if k is None:
            lo, hi = 8 + n + start, 8 + n + end
        else:
            lo = 8 + n + start + k * width * size
            hi = lo + width * size
        return list(struct.unpack(f"<{(hi - lo) // size}{code}", raw[lo:hi]))

    k_total = manifest["model"]["num_classes"]
    counts = [read_row("counts", k)[0] for k in range(k_total)]
    assert counts == b.counts.tolist()
    for tap in manifest["taps"]:
        name, c = tap["name"], tap["channels"]
        means = torch.tensor([read_row(f"{name}/mean", k) for k in range(k_total)], dtype=torch.float64)
        vars_ = torch.tensor([read_row(f"{name}/var", k) for k in range(k_total)], dtype=torch.float64)
        assert means.shape == (k_total, c)
        torch.testing.assert_close(means.float(), b.stats[name].mean, rtol=0, atol=0)
        torch.testing.assert_close(vars_.float(), b.stats[name].var, rtol=0, atol=0)
        # The documented pooling: global = count-weighted mean of the rows, variance with the between-class term.
        n = torch.tensor(counts, dtype=torch.float64).unsqueeze(1)
        gmean = (n * means).sum(0) / n.sum()
        gvar = (n * (vars_ + (means - gmean).square())).sum(0) / n.sum()
        torch.testing.assert_close(torch.tensor(read_row(f"{name}/global_mean", None), dtype=torch.float64), gmean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(read_row(f"{name}/global_var", None), dtype=torch.float64), gvar, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("header", [b"{not json", b'{"t": 5}', b'{"__metadata__": [1]}', b'{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 999]}}'])
def test_a_malformed_header_whose_hash_matches_the_manifest_is_corrupt(saved: Path, header: bytes):
    """Bytes that hash as the manifest says but are no safetensors file: a CorruptBundleError naming the file, not a crash."""
    import hashlib

    f = saved / "stats.safetensors"
    f.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    d = json.loads((saved / "sowmeta.json").read_text())
    d["files"][0].update(sha256=hashlib.sha256(f.read_bytes()).hexdigest(), size=f.stat().st_size)
    (saved / "sowmeta.json").write_text(json.dumps(d))
    with pytest.raises(CorruptBundleError, match=r"is not valid safetensors: .*\[rule safetensors\]"):
        Bundle.load(saved)
