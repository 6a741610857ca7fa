"""The local registry: content-addressed revisions, refs, atomic and concurrent pushes, backend choice."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from pathlib import Path

import pytest
from registry_fixtures import bundle_bytes, make_bundle, registry_env  # noqa: F401  (fixtures)

from sowmeta import errors as E
from sowmeta import registry
from sowmeta.registry import local
from sowmeta.registry.resolve import choose_backend

pytestmark = pytest.mark.usefixtures("registry_env")

NAME = "acme/tiny"


def expected_revision(bundle: Path) -> str:
    """The revision id recomputed from the files on disk with hashlib (independent of sowmeta's code)."""
    raw = (bundle / "sowmeta.json").read_bytes()
    h = hashlib.sha256(b"sowmeta-revision-v1\n" + raw + b"\n")
    for f in json.loads(raw)["files"]:
        h.update(f"{f['name']} {hashlib.sha256((bundle / f['name']).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def registry_root() -> Path:
    import os

    return Path(os.environ["SOWMETA_REGISTRY"])


def test_push_pull_byte_identical(make_bundle) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    pushed = registry.push(src, NAME)
    assert pushed.backend == "local" and pushed.revision == "main"
    assert pushed.commit == expected_revision(src)
    assert (registry_root() / NAME / "refs" / "main").read_text().strip() == pushed.commit

    pulled = registry.pull(NAME)
    assert pulled.commit == pushed.commit
    assert bundle_bytes(pulled.path) == bundle_bytes(src)
    manifest = json.loads((pulled.path / "sowmeta.json").read_bytes())
    for f in manifest["files"]:
        assert hashlib.sha256((pulled.path / f["name"]).read_bytes()).hexdigest() == f["sha256"]
    assert all(not p.stat().st_mode & 0o222 for p in pulled.path.iterdir()), "stored revisions are read-only"

    out = registry.pull(NAME, to=Path(src).parent / "copy")
    assert bundle_bytes(out.path) == bundle_bytes(src)


def test_revision_pinning_and_refs(make_bundle) -> None:  # noqa: ANN001
    first, second = make_bundle(seed=1), make_bundle(seed=2, shard_bytes=200)
    a = registry.push(first, NAME, message="first")
    b = registry.push(second, NAME, message="second")
    registry.push(first, NAME, revision="v1")
    assert a.commit != b.commit

    assert bundle_bytes(registry.pull(NAME).path) == bundle_bytes(second)
    assert bundle_bytes(registry.pull(NAME, revision=a.commit).path) == bundle_bytes(first)
    assert bundle_bytes(registry.pull(f"{NAME}@{a.commit[:12]}").path) == bundle_bytes(first)
    assert bundle_bytes(registry.pull(f"{NAME}@v1").path) == bundle_bytes(first)

    log = [json.loads(line) for line in (registry_root() / NAME / "log.jsonl").read_text().splitlines()]
    assert [(e["ref"], e["revision"], e["previous"]) for e in log] == [
        ("main", a.commit, None), ("main", b.commit, a.commit), ("v1", a.commit, None)
    ]
    entries = {e.commit: e for e in registry.list_bundles()}
    assert set(entries) == {a.commit, b.commit}
    assert entries[a.commit].refs == ("v1",) and entries[b.commit].refs == ("main",)


def test_same_bundle_is_stored_once(make_bundle) -> None:  # noqa: ANN001
    src = make_bundle(seed=3)
    a, b = registry.push(src, NAME), registry.push(src, NAME, revision="stable")
    assert a.commit == b.commit
    assert [p.name for p in (registry_root() / NAME / "revisions").iterdir()] == [a.commit]


def test_typed_errors(make_bundle) -> None:  # noqa: ANN001
    with pytest.raises(E.NotFoundError, match="neither in the local registry"):
        registry.pull(NAME)
    registry.push(make_bundle(seed=1), NAME)
    with pytest.raises(E.RevisionNotFoundError, match="refs: main"):
        registry.pull(NAME, revision="v9")
    with pytest.raises(E.RevisionNotFoundError):
        registry.pull(NAME, revision="0" * 12)
    with pytest.raises(E.ConfigError):
        registry.pull(NAME, revision="../../etc")
    with pytest.raises(E.ConfigError):
        registry.push(make_bundle(seed=1), "no-slash")
    with pytest.raises(E.ConfigError, match="private= applies to the Hub"):
        registry.push(make_bundle(seed=1), NAME, private=True)
    with pytest.raises(E.OutputExistsError):
        registry.pull(NAME, to=registry_root())


def test_corrupt_bundle_is_refused_and_nothing_stored(make_bundle) -> None:  # noqa: ANN001
    src = make_bundle(seed=4)
    data = bytearray((src / "stats.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (src / "stats.safetensors").write_bytes(bytes(data))
    with pytest.raises(E.ChecksumError):
        registry.push(src, NAME)
    assert not (registry_root() / NAME / "refs").exists()
    assert not list((registry_root() / ".tmp").iterdir())


def test_failure_during_copy_leaves_refs_untouched(make_bundle, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    first, second = make_bundle(seed=1), make_bundle(seed=2)
    a = registry.push(first, NAME)
    ref_before = (registry_root() / NAME / "refs" / "main").read_bytes()

    def half_copy_then_fail(src: Path, dst: Path, record: object) -> None:
        dst.write_bytes(src.read_bytes()[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local, "_copy_file", half_copy_then_fail)
    with pytest.raises(OSError, match="No space left"):
        registry.push(second, NAME)

    assert (registry_root() / NAME / "refs" / "main").read_bytes() == ref_before
    assert [p.name for p in (registry_root() / NAME / "revisions").iterdir()] == [a.commit]
    assert not list((registry_root() / ".tmp").iterdir())
    assert bundle_bytes(registry.pull(NAME).path) == bundle_bytes(first)


def _push_many(root: str, bundle: str, barrier: object, n: int) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    for _ in range(n):
        local.push(bundle, NAME, root=root)


def test_concurrent_pushes_from_two_processes(make_bundle) -> None:  # noqa: ANN001
    bundles = [make_bundle(seed=1), make_bundle(seed=2)]
    root = registry_root()
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_push_many, args=(str(root), str(b), barrier, 4)) for b in bundles]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]

    ids = {expected_revision(b) for b in bundles}
    assert {p.name for p in (root / NAME / "revisions").iterdir()} == ids
    assert (root / NAME / "refs" / "main").read_text().strip() in ids
    log = [json.loads(line) for line in (root / NAME / "log.jsonl").read_text().splitlines()]
    assert len(log) == 8 and {e["revision"] for e in log} == ids
    # the log is a consistent history: each push saw the ref the previous push left
    assert all(later["previous"] == earlier["revision"] for earlier, later in zip(log, log[1:]))
    assert not list((root / ".tmp").iterdir())
    for b in bundles:
        assert bundle_bytes(registry.pull(NAME, revision=expected_revision(b)).path) == bundle_bytes(b)


def test_backend_choice_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SOWMETA_REGISTRY")
    monkeypatch.setenv("SOWMETA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    default = choose_backend()
    assert (default.kind, default.root, default.why) == ("local", tmp_path / "cache" / "registry", "default")

    monkeypatch.setenv("SOWMETA_REGISTRY", "hub")
    assert choose_backend().kind == "hub"
    assert choose_backend("local").root == tmp_path / "cache" / "registry"
    assert choose_backend(tmp_path / "elsewhere").root == tmp_path / "elsewhere"

    monkeypatch.setenv("SOWMETA_REGISTRY", str(tmp_path / "env-reg"))
    assert (choose_backend().kind, choose_backend().root) == ("local", tmp_path / "env-reg")
    assert choose_backend("hub").kind == "hub"
    with pytest.raises(E.ConfigError):
        choose_backend(" ")


def test_resolve_bundle(make_bundle, tmp_path: Path) -> None:  # noqa: ANN001
    src = make_bundle(seed=5)
    assert registry.resolve_bundle(str(src)) == src
    pushed = registry.push(src, NAME, revision="v2")
    path = registry.resolve_bundle(f"{NAME}@v2")
    assert path == pushed.path and bundle_bytes(path) == bundle_bytes(src)
    assert registry.resolve_bundle(NAME, revision="v2") == path
    with pytest.raises(E.ConfigError, match="was also given"):
        registry.resolve_bundle(f"{NAME}@v2", revision="main")
    with pytest.raises(E.ConfigError, match="a revision only applies"):
        registry.resolve_bundle(str(src), revision="v2")
    with pytest.raises(E.BundleNotFoundError, match="neither a bundle directory"):
        registry.resolve_bundle(str(tmp_path / "missing" / "dir" / "x"))
    with pytest.raises(E.RevisionNotFoundError):
        registry.resolve_bundle(NAME)  # only v2 exists, main does not


def _push_and_hang(root: str, bundle: str, started: object, where: str) -> None:
    """Push, but stop for good at ``where`` (the parent kills us there): after copying one file, or under the lock."""
    import os
    import time

    def hang() -> None:
        started.set()  # type: ignore[attr-defined]
        time.sleep(60)

    if where == "copying":
        real_copy = local._copy_file

        def copy_then_hang(src: Path, dst: Path, record: object) -> None:
            real_copy(src, dst, record)  # type: ignore[arg-type]
            hang()

        local._copy_file = copy_then_hang  # type: ignore[assignment]
    else:  # the first rename under the lock installs the revision: hang just before it
        os.replace = lambda *args, **kwargs: hang()  # type: ignore[assignment]
    local.push(bundle, NAME, root=root)


@pytest.mark.parametrize("where", ["copying", "holding the lock"])
def test_push_killed_midway_keeps_previous_revision(make_bundle, where: str) -> None:  # noqa: ANN001
    import os
    import signal
    import time

    first, second = make_bundle(seed=1), make_bundle(seed=2, shard_bytes=200)
    a = registry.push(first, NAME)
    root = registry_root()
    ref_before = (root / NAME / "refs" / "main").read_bytes()

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    started = ctx.Event()
    proc = ctx.Process(target=_push_and_hang, args=(str(root), str(second), started, where))
    proc.start()
    assert started.wait(30), "the push never started copying"
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL

    assert (root / NAME / "refs" / "main").read_bytes() == ref_before
    assert [p.name for p in (root / NAME / "revisions").iterdir()] == [a.commit]
    assert [e.commit for e in registry.list_bundles()] == [a.commit]
    assert bundle_bytes(registry.pull(NAME).path) == bundle_bytes(first)
    # the dead push's lock died with it: the next push goes through at once
    left = list((root / ".tmp").glob("push-*"))
    assert len(left) == 1  # the dead push's copy; a day later the next push sweeps it
    old = time.time() - local.STALE_TMP_S - 60
    os.utime(left[0], (old, old))
    recent = root / ".tmp" / "push-in-progress"
    recent.mkdir()  # another push's copy under way: kept
    b = registry.push(second, NAME, message="after the crash")
    assert b.commit == expected_revision(second) and bundle_bytes(registry.pull(NAME).path) == bundle_bytes(second)
    assert sorted((root / ".tmp").iterdir()) == [recent]
