"""Verification remembered: loads stop re-hashing unchanged files, and every change through the file system is still caught."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sowmeta.bundle import files as bundle_files, schema, verified
from sowmeta.bundle import Bundle
from sowmeta.bundle.files import verify_files
from sowmeta.errors import ChecksumError, SchemaError

from test_bundle import make_bundle


@pytest.fixture
def hashes(monkeypatch) -> list[Path]:
    """Every file ``bundle_files`` hashes in full, in order."""
    seen: list[Path] = []
    real = bundle_files.sha256_file

    def spy(path, *args, **kwargs):
        seen.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(bundle_files, "sha256_file", spy)
    return seen


@pytest.fixture
def aged(tmp_path: Path, monkeypatch) -> Path:
    """A saved bundle whose files are older than the (shortened) racy window, so a full check is remembered."""
    monkeypatch.setattr(verified, "RACY_SECONDS", 0.05)
    path = make_bundle().save(tmp_path / "b")
    time.sleep(0.1)
    return path


def _flip_a_value_keeping_size_and_mtime(path: Path) -> None:
    """Rewrite one byte of the data region (same size), then put the old atime/mtime back."""
    f = path / "stats.safetensors"
    st = f.stat()
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0x40
    f.write_bytes(bytes(raw))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = f.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_a_load_hashes_once_then_trusts_the_record(aged: Path, hashes: list[Path]):
    Bundle.load(aged)
    assert hashes == [aged / "stats.safetensors"]
    Bundle.load(aged, classes=[1])
    Bundle.load(aged)
    assert len(hashes) == 1, "an unchanged, remembered file was hashed again"
    verify_files(aged, Bundle.read_manifest(aged))  # what validate and pull run: always in full
    assert len(hashes) == 2


def test_same_size_and_restored_mtime_is_still_caught(aged: Path, hashes: list[Path]):
    Bundle.load(aged)
    _flip_a_value_keeping_size_and_mtime(aged)
    with pytest.raises(ChecksumError, match="sha256"):
        Bundle.load(aged, classes=[0])
    assert len(hashes) == 2  # the changed ctime sent the load back to hashing


def test_touching_or_replacing_a_file_means_hashing_again(aged: Path, hashes: list[Path]):
    Bundle.load(aged)
    f = aged / "stats.safetensors"
    os.utime(f)  # touch: new mtime and ctime, same bytes
    Bundle.load(aged)
    data = f.read_bytes()
    f.unlink()
    f.write_bytes(data)  # a copy: a new inode
    Bundle.load(aged)
    assert len(hashes) == 3


def test_files_newer_than_the_racy_window_are_not_remembered(tmp_path: Path, hashes: list[Path]):
    path = make_bundle().save(tmp_path / "b")  # the default window (2.5 s): just written is too fresh
    hashes.clear()  # saving hashed it once
    Bundle.load(path)
    Bundle.load(path)
    assert len(hashes) == 2
    st = (path / "stats.safetensors").stat()
    record = verified.CheckedFile("0" * 64, None)
    newest = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
    assert not verified.remember_file(st, st, record, now=newest + verified.RACY_SECONDS - 0.01)
    assert verified.remember_file(st, st, record, now=newest + verified.RACY_SECONDS + 0.01)
    assert verified.recall_file(st) == record


def test_a_file_that_changed_while_hashed_is_not_remembered(aged: Path):
    f = aged / "stats.safetensors"
    before = f.stat()
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    after = f.stat()
    assert not verified.remember_file(before, after, verified.CheckedFile("0" * 64, None), now=time.time() + 10)
    assert verified.recall_file(after) is None


def test_a_forged_record_fools_load_but_never_validate_or_pull(aged: Path):
    """The documented limit: the record vouches for ctime bookkeeping. A full check (validate, pull) ignores it."""
    Bundle.load(aged)
    good = verified.recall_file((aged / "stats.safetensors").stat())
    _flip_a_value_keeping_size_and_mtime(aged)
    st = (aged / "stats.safetensors").stat()
    assert verified.remember_file(st, st, good, now=time.time() + 10)  # as if ctime had been forged back
    Bundle.load(aged, verify=True, classes=[2])  # trusted: what the docs say the record cannot protect against
    with pytest.raises(ChecksumError):
        verify_files(aged, Bundle.read_manifest(aged))


def test_manifest_content_is_validated_once(saved_manifest: dict, monkeypatch):
    import jsonschema

    runs = []
    real = jsonschema.Draft202012Validator

    def spy(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(jsonschema, "Draft202012Validator", spy)
    schema.validate_manifest(saved_manifest)
    schema.validate_manifest(saved_manifest)
    assert len(runs) == 0  # saving it validated and remembered this content
    changed = {**saved_manifest, "model": {**saved_manifest["model"], "labels": ["x"] * saved_manifest["model"]["num_classes"]}}
    schema.validate_manifest(changed)
    schema.validate_manifest(changed)
    assert len(runs) == 1
    broken = {**saved_manifest, "dtype": "int8"}
    for _ in range(2):  # an invalid content is never remembered
        with pytest.raises(SchemaError):
            schema.validate_manifest(broken)
    assert len(runs) == 3
    schema.validate_manifest(saved_manifest, remember=False)
    assert len(runs) == 4


@pytest.fixture
def saved_manifest(tmp_path: Path) -> dict:
    import json

    path = make_bundle().save(tmp_path / "b")
    return json.loads((path / "sowmeta.json").read_text())


def test_an_unchanged_manifest_is_not_re_encoded_and_an_edited_one_is_caught(aged: Path, monkeypatch):
    """The manifest's content digest is remembered by the sha256 of the file's bytes: a load of an unchanged
    manifest does not re-encode it; an edit (new bytes) is digested afresh and refused."""
    import json

    from sowmeta.bundle import manifest as manifest_module

    Bundle.load(aged)  # digests the manifest once and remembers it

    def no_encoding(_d):
        raise AssertionError("the manifest was re-encoded")

    monkeypatch.setattr(manifest_module, "content_digest", no_encoding)
    Bundle.load(aged, classes=[1])
    monkeypatch.undo()
    monkeypatch.setattr(verified, "RACY_SECONDS", 0.05)
    mpath = aged / "sowmeta.json"
    d = json.loads(mpath.read_text())
    d["model"]["labels"] = [f"x{i}" for i in range(d["model"]["num_classes"])]
    mpath.write_text(json.dumps(d, indent=1))
    with pytest.raises(ChecksumError, match="changed after the bundle was written"):
        Bundle.load(aged, classes=[1])
