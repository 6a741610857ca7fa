"""The Hub backend against tests/hub_server.py: one-commit pushes, pinned pulls, typed errors, offline, card."""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import pytest
from hub_server import HubServer, blob_oid
from registry_fixtures import (  # noqa: F401  (fixtures)
    HUB_ORG,
    OTHER_TOKEN,
    bundle_bytes,
    fake_hub,
    make_bundle,
    registry_env,
)

from sowmeta import errors as E
from sowmeta import registry
from sowmeta.registry.card import render_card

NAME = f"{HUB_ORG}/tiny-sowmeta"


def server_files(hub: HubServer, rev: str = "main", name: str = NAME) -> dict[str, bytes]:
    commit = hub.state.repos[name].resolve(rev)
    assert commit is not None
    return commit.files


def commit_count(hub: HubServer, name: str = NAME) -> int:
    return len(hub.state.repos[name].commits)


def test_push_is_one_commit_and_pull_is_byte_identical(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    pushed = registry.push(src, NAME, registry="hub", message="first release")
    repo = fake_hub.state.repos[NAME]
    assert pushed.backend == "hub" and pushed.commit == repo.branches["main"]
    assert commit_count(fake_hub) == 2  # the repository's initial commit + exactly one for the bundle
    assert repo.commits[pushed.commit].summary == "first release"
    stored = server_files(fake_hub)
    assert {k: v for k, v in stored.items() if k in bundle_bytes(src)} == bundle_bytes(src)
    assert _front_matter(stored["README.md"].decode())["library_name"] == "sowmeta"
    # regular upload mode: every file travelled base64-encoded inside the one commit (no LFS, no Xet)
    assert fake_hub.state.commit_ops == [["file"] * (len(bundle_bytes(src)) + 1)]

    pulled = registry.pull(NAME, registry="hub")
    assert pulled.commit == pushed.commit and pulled.revision == "main"
    assert bundle_bytes(pulled.path) == bundle_bytes(src)
    manifest = json.loads((pulled.path / "sowmeta.json").read_bytes())
    for f in manifest["files"]:
        assert hashlib.sha256((pulled.path / f["name"]).read_bytes()).hexdigest() == f["sha256"]
    assert not (pulled.path / ".gitattributes").exists()  # only bundle files are fetched
    assert str(pulled.path).startswith(os.environ["HF_HUB_CACHE"])  # the standard Hugging Face cache

    copied = registry.pull(NAME, registry="hub", to=src.parent / "copy")
    assert bundle_bytes(copied.path) == bundle_bytes(src) and (copied.path / "README.md").is_file()


def registry_cache() -> str:
    import os

    return os.environ["SOWMETA_CACHE"]


def test_revision_pinning_branches_and_stale_shards(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    sharded, single = make_bundle(seed=1, shard_bytes=200), make_bundle(seed=2)
    a = registry.push(sharded, NAME, registry="hub")
    b = registry.push(single, NAME, registry="hub")
    assert a.commit != b.commit
    assert not any(n.startswith("stats-") for n in server_files(fake_hub)), "old shards are deleted in the same commit"

    assert bundle_bytes(registry.pull(NAME, registry="hub").path) == bundle_bytes(single)
    first = registry.pull(f"{NAME}@{a.commit}", registry="hub")
    assert first.commit == a.commit and bundle_bytes(first.path) == bundle_bytes(sharded)

    v1 = registry.push(sharded, NAME, registry="hub", revision="v1")
    assert fake_hub.state.repos[NAME].branches["v1"] == v1.commit
    assert fake_hub.state.repos[NAME].branches["main"] == b.commit
    assert bundle_bytes(registry.pull(NAME, revision="v1", registry="hub").path) == bundle_bytes(sharded)


def test_env_selects_the_hub(fake_hub: HubServer, make_bundle, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    # HF_ENDPOINT and HF_TOKEN are set by the fixture, yet the default registry is still local
    assert registry.push(src, NAME).backend == "local"
    assert NAME not in fake_hub.state.repos
    monkeypatch.setenv("SOWMETA_REGISTRY", "hub")
    assert registry.push(src, NAME).backend == "hub"
    assert registry.resolve_bundle(NAME).parent.name == "snapshots"
    assert [e.name for e in registry.list_bundles()] == [NAME]


def test_auth_errors(fake_hub: HubServer, make_bundle, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(E.AuthError, match=r"\(401: .*HF_TOKEN"):
        registry.push(src, NAME, registry="hub")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(E.AuthError, match="Invalid credentials"):
        registry.pull(NAME, registry="hub")
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)  # bob may not write to alice's organization
    with pytest.raises(E.AuthError, match=r"\(403: "):
        registry.push(src, NAME, registry="hub")
    assert NAME not in fake_hub.state.repos


def test_not_found_errors(fake_hub: HubServer, make_bundle, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    with pytest.raises(E.NotFoundError, match="has no repository") as info:
        registry.pull(f"{HUB_ORG}/nothing-here", registry="hub")
    assert not isinstance(info.value, E.RevisionNotFoundError)
    registry.push(make_bundle(seed=1), NAME, registry="hub")
    with pytest.raises(E.RevisionNotFoundError, match="no such branch, tag or commit"):
        registry.pull(NAME, revision="v404", registry="hub")
    with pytest.raises(E.RevisionNotFoundError):
        registry.pull(NAME, revision="0" * 40, registry="hub")

    fake_hub.add_repo(f"{HUB_ORG}/secret", {"sowmeta.json": b"{}"}, private=True)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(E.NotFoundError, match="private"):
        registry.pull(f"{HUB_ORG}/secret", registry="hub")

    fake_hub.add_repo(f"{HUB_ORG}/plain-model", {"model.safetensors": b"x"})
    with pytest.raises(E.BundleNotFoundError, match="has no sowmeta.json: it is not a sowmeta bundle"):
        registry.pull(f"{HUB_ORG}/plain-model", registry="hub")


def test_gated_repo(fake_hub: HubServer, make_bundle, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    files = bundle_bytes(make_bundle(seed=1))
    fake_hub.add_repo("bob/gated", files, gated=True)
    with pytest.raises(E.GatedRepoError, match="request access"):
        registry.pull("bob/gated", registry="hub")
    fake_hub.state.repos["bob/gated"].gated_allowed.add("alice")
    assert bundle_bytes(registry.pull("bob/gated", registry="hub").path) == files


def test_private_push(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    registry.push(src, f"{HUB_ORG}/private-one", registry="hub", private=True)
    assert fake_hub.state.repos[f"{HUB_ORG}/private-one"].private
    registry.push(src, NAME, registry="hub")
    with pytest.raises(E.ConfigError, match="already exists and is public"):
        registry.push(src, NAME, registry="hub", private=True)


def test_tampered_file_on_the_hub_fails_verification(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    registry.push(make_bundle(seed=1), NAME, registry="hub")
    files = server_files(fake_hub)
    data = bytearray(files["stats.safetensors"])
    data[-1] ^= 0xFF
    files["stats.safetensors"] = bytes(data)
    with pytest.raises(E.ChecksumError):
        registry.pull(NAME, registry="hub")


@pytest.mark.parametrize("how", ["env", "constant"])
def test_offline_pull_from_cache(fake_hub: HubServer, make_bundle, monkeypatch: pytest.MonkeyPatch, how: str) -> None:  # noqa: ANN001
    import huggingface_hub.constants as hf_constants

    src = make_bundle(seed=1)
    pushed = registry.push(src, NAME, registry="hub")
    online = registry.pull(NAME, registry="hub")
    fake_hub.stop()  # nothing can be fetched any more
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    offline = registry.pull(NAME, registry="hub")
    assert (offline.path, offline.commit) == (online.path, pushed.commit)
    assert bundle_bytes(offline.path) == bundle_bytes(src)
    assert registry.pull(NAME, revision=pushed.commit, registry="hub").path == online.path
    with pytest.raises(E.OfflineError, match="HF_HUB_OFFLINE"):
        registry.pull(f"{HUB_ORG}/never-pulled", registry="hub")
    with pytest.raises(E.OfflineError):
        registry.pull(NAME, revision="v1", registry="hub")
    with pytest.raises(E.OfflineError, match="forbids talking to the Hub"):
        registry.push(src, NAME, registry="hub")
    with pytest.raises(E.OfflineError):
        registry.list_bundles(registry="hub")


def test_unreachable_hub_is_a_network_error(fake_hub: HubServer) -> None:
    fake_hub.stop()
    with pytest.raises(E.NetworkError, match="cannot reach"):
        registry.pull(NAME, registry="hub")


@pytest.mark.parametrize("mode", ["connection dropped", "server died"])
def test_upload_killed_midway_keeps_previous_revision(fake_hub: HubServer, make_bundle, mode: str) -> None:  # noqa: ANN001
    first, second = make_bundle(seed=1), make_bundle(seed=2, shard_bytes=200)
    a = registry.push(first, NAME, registry="hub")
    if mode == "server died":
        fake_hub.die_on_commit = True
    else:
        fake_hub.abort_next_commits = 1
    with pytest.raises(E.NetworkError, match="connection .* broke .* keeps its previous revision"):
        registry.push(second, NAME, registry="hub")
    assert fake_hub.aborted_commits == 1
    if mode == "server died":
        assert not fake_hub.running
        fake_hub.restart()
    assert fake_hub.state.repos[NAME].branches["main"] == a.commit and commit_count(fake_hub) == 2
    pulled = registry.pull(NAME, registry="hub")
    assert pulled.commit == a.commit and bundle_bytes(pulled.path) == bundle_bytes(first)
    # and the next push goes through
    b = registry.push(second, NAME, registry="hub")
    assert bundle_bytes(registry.pull(NAME, registry="hub").path) == bundle_bytes(second) and b.commit != a.commit


def _front_matter(card: str) -> dict[str, object]:
    """Parse the simple YAML the card uses (``key: value`` and ``- item`` lists) without PyYAML."""
    assert card.startswith("---\n")
    head = card[4:].split("\n---\n", 1)[0]
    out: dict[str, object] = {}
    key = ""
    for line in head.splitlines():
        if line.startswith("- "):
            out.setdefault(key, [])
            out[key].append(json.loads(line[2:]) if line[2:].startswith('"') else line[2:])  # type: ignore[union-attr]
        else:
            key, _, value = line.partition(":")
            value = value.strip()
            if value:
                out[key] = json.loads(value) if value.startswith('"') else value
    return out


def test_model_card(make_bundle, registry_env: Path) -> None:  # noqa: ANN001, F811
    src = make_bundle(seed=1, base_model="timm/resnet18.a1_in1k", num_classes=4)
    card = render_card(src, NAME, license="apache-2.0")
    front = _front_matter(card)
    assert front["library_name"] == "sowmeta" and front["license"] == "apache-2.0"
    assert front["base_model"] == "timm/resnet18.a1_in1k"
    assert {"sowmeta", "model-inversion", "class-conditional-statistics"} <= set(front["tags"])  # type: ignore[arg-type]
    yaml = pytest.importorskip("yaml")  # huggingface_hub depends on PyYAML: check with a real parser too
    assert yaml.safe_load(card[4:].split("\n---\n", 1)[0]) == front

    manifest = json.loads((src / "sowmeta.json").read_bytes())
    body = card.split("\n---\n", 1)[1]
    assert manifest["model"]["fingerprint"] in body
    assert "3: class-3" in body and f"**Taps**: {len(manifest['taps'])}" in body
    channels = sum(t["channels"] for t in manifest["taps"])
    assert f"{channels} channels in total" in body
    assert f"sowmeta pull {NAME}" in body and f"sowmeta synthesize --bundle {NAME}" in body
    assert "scenario A" in body

    plain = _front_matter(render_card(make_bundle(seed=2), NAME))
    assert plain["license"] == "other" and "base_model" not in plain
    with pytest.raises(E.ConfigError, match="license"):
        render_card(src, NAME, license="Apache 2.0\nx: y")


def test_list_bundles_on_the_hub(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    registry.push(src, NAME, registry="hub")
    registry.push(src, f"{HUB_ORG}/secret", registry="hub", private=True)
    fake_hub.add_repo("bob/not-a-bundle", {"model.safetensors": b"x"})
    seen = {e.name: e for e in registry.list_bundles(registry="hub")}
    assert set(seen) == {NAME, f"{HUB_ORG}/secret"}
    assert seen[NAME].commit == fake_hub.state.repos[NAME].branches["main"]
    assert seen[f"{HUB_ORG}/secret"].private is True
    assert registry.list_bundles(registry="hub", author="bob") == []


def test_server_serves_what_the_client_expects(fake_hub: HubServer) -> None:
    """The headers snapshot_download relies on, checked on the wire with the client's own HTTP session."""
    from huggingface_hub.utils import get_session

    fake_hub.add_repo("bob/raw", {"a.txt": b"hello"})
    head = get_session().head(fake_hub.file_url("bob/raw", "main", "a.txt"))
    assert head.status_code == 200
    assert head.headers["X-Repo-Commit"] == fake_hub.state.repos["bob/raw"].branches["main"]
    assert head.headers["ETag"] == f'"{blob_oid(b"hello")}"' and head.headers["Content-Length"] == "5"
    missing = get_session().head(fake_hub.file_url("bob/raw", "main", "b.txt"))
    assert (missing.status_code, missing.headers["X-Error-Code"]) == (404, "EntryNotFound")
    assert "X-Repo-Commit" in missing.headers
    part = get_session().get(fake_hub.file_url("bob/raw", "main", "a.txt"), headers={"Range": "bytes=2-"})
    assert (part.status_code, part.content) == (206, b"llo")


def test_failed_push_to_a_new_branch_leaves_no_branch(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    first, second = make_bundle(seed=1), make_bundle(seed=2)
    a = registry.push(first, NAME, registry="hub")
    v1 = registry.push(second, NAME, registry="hub", revision="v1")
    repo = fake_hub.state.repos[NAME]

    fake_hub.abort_next_commits = 1  # a new branch: created, then the commit breaks
    with pytest.raises(E.NetworkError):
        registry.push(second, NAME, registry="hub", revision="v2")
    assert "v2" not in repo.branches, "a branch left at main would serve main's bundle as v2"
    with pytest.raises(E.RevisionNotFoundError):
        registry.pull(NAME, revision="v2", registry="hub")

    fake_hub.abort_next_commits = 1  # an existing branch is never deleted
    with pytest.raises(E.NetworkError):
        registry.push(first, NAME, registry="hub", revision="v1")
    assert (repo.branches["v1"], repo.branches["main"]) == (v1.commit, a.commit)
    assert fake_hub.aborted_commits == 2


def test_schema_is_checked_after_download(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    files = bundle_bytes(make_bundle(seed=1))
    manifest = json.loads(files["sowmeta.json"])
    del manifest["taps"]  # the schema requires it
    fake_hub.add_repo(f"{HUB_ORG}/no-taps", {**files, "sowmeta.json": json.dumps(manifest).encode()})
    with pytest.raises(E.SchemaError, match="downloaded twice"):
        registry.pull(f"{HUB_ORG}/no-taps", registry="hub")


def _damage(path: Path) -> None:
    """Flip the last byte of a cached file (through the cache's symlink to its blob)."""
    real = path.resolve()
    data = bytearray(real.read_bytes())
    data[-1] ^= 0xFF
    real.write_bytes(bytes(data))


def test_damaged_cache_is_downloaded_again(fake_hub: HubServer, make_bundle, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    registry.push(src, NAME, registry="hub")
    first = registry.pull(NAME, registry="hub")
    _damage(first.path / "stats.safetensors")

    again = registry.pull(NAME, registry="hub")
    assert again.commit == first.commit and bundle_bytes(again.path) == bundle_bytes(src)

    _damage(again.path / "stats.safetensors")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing to download from: say so, with the fix
    with pytest.raises(E.ChecksumError, match="cached copy is damaged: unset HF_HUB_OFFLINE"):
        registry.pull(NAME, registry="hub")


def test_list_shows_the_local_registry_and_the_hub_cache(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    src, other = make_bundle(seed=1), make_bundle(seed=2)
    hub_push = registry.push(src, NAME, registry="hub")
    v1 = registry.push(other, NAME, registry="hub", revision="v1")
    local_push = registry.push(other, "acme/local-only")
    pulled = registry.pull(NAME, registry="hub")
    pinned = registry.pull(f"{NAME}@{v1.commit}", registry="hub")
    fake_hub.add_repo(f"{HUB_ORG}/plain-model", {"model.safetensors": b"x"})
    with pytest.raises(E.BundleNotFoundError):
        registry.pull(f"{HUB_ORG}/plain-model", registry="hub")  # cached, but not a bundle
    fake_hub.stop()  # listing what is at hand needs no network

    seen = {(e.backend, e.name, e.commit): e for e in registry.list_bundles()}
    assert set(seen) == {
        ("local", "acme/local-only", local_push.commit),
        ("hub-cache", NAME, hub_push.commit),
        ("hub-cache", NAME, v1.commit),
    }
    assert seen[("hub-cache", NAME, hub_push.commit)].refs == ("main",)
    assert seen[("hub-cache", NAME, hub_push.commit)].path == pulled.path
    assert seen[("hub-cache", NAME, v1.commit)].refs == () and seen[("hub-cache", NAME, v1.commit)].path == pinned.path
    assert [e.name for e in registry.list_bundles(author="acme")] == ["acme/local-only"]


def test_server_never_applies_a_commit_cut_short(fake_hub: HubServer) -> None:
    """A client killed mid-body (here: a raw socket closed early at a line boundary) commits nothing."""
    import base64
    import socket
    import time

    from registry_fixtures import HUB_TOKEN

    repo = fake_hub.add_repo(f"{HUB_ORG}/raw")
    head = repo.branches["main"]
    lines = [
        {"key": "header", "value": {"summary": "cut short"}},
        {"key": "file", "value": {"path": "a.txt", "encoding": "base64", "content": base64.b64encode(b"a").decode()}},
        {"key": "file", "value": {"path": "b.txt", "encoding": "base64", "content": base64.b64encode(b"b").decode()}},
    ]
    body = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    sent = body[: body.index(b"\n", body.index(b"a.txt")) + 1]  # header + first file: valid NDJSON, incomplete body
    request = (
        f"POST /api/models/{HUB_ORG}/raw/commit/main HTTP/1.1\r\nHost: {fake_hub.url[7:]}\r\n"
        f"Authorization: Bearer {HUB_TOKEN}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", fake_hub.port)) as s:
        s.sendall(request + sent)
    deadline = time.monotonic() + 10
    while fake_hub.incomplete_commits == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_hub.incomplete_commits == 1
    assert repo.branches["main"] == head and len(repo.commits) == 1


_DOC_CARD_RE = re.compile(r"<!-- CARD: cifar-resnet56 -->.*?````markdown\n(.*?)````", re.S)
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.shared
def test_docs_show_the_card_of_the_real_cifar_resnet56_bundle(tmp_path: Path) -> None:
    """docs/registry.md's card is what ``card_from_manifest`` writes for cifar-resnet56 with the ../shared weights.

    Model facts (fingerprint, structure, taps, channels, preprocessing, the weights' name and
    sha256) come from the real model, the source images' compression from the real training JPEGs; only
    what depends on the collection run (data name, images, date, tool version) is read from the
    documented card itself.
    """
    import torch
    from conftest import shared_path

    from sowmeta.bundle import Bundle, Manifest, ModelRecord, SourceRecord, TapRecord, TapStats
    from sowmeta.data.jpeg_quality import compression_record
    from sowmeta.models import fingerprint, load_model, structure_fingerprint
    from sowmeta.registry.card import card_from_manifest
    from sowmeta.models.taps import probe, resolve_taps

    weights = shared_path("models", "cifar10", "resnet56.safetensors")
    doc = (Path(__file__).parent.parent / "docs" / "registry.md").read_text(encoding="utf-8")
    match = _DOC_CARD_RE.search(doc)
    assert match, "docs/registry.md lost its cifar-resnet56 card"
    card = match.group(1)

    def fact(pattern: str) -> str:
        found = re.search(pattern, card)
        assert found, pattern
        return found.group(1)

    model = load_model("cifar-resnet56", weights=str(weights))
    found = probe(model.module, resolve_taps(model.module, "bn-inputs"), 32)
    taps = [TapRecord(t.name, t.module, t.position, t.kind, found.channels[t.name], t.axis) for t in found.taps]
    record = ModelRecord("cifar-resnet56", fingerprint(model.module), 10, CIFAR10, model.weights, False, fact(r"base_model: (\S+)"),
                         structure_fingerprint(model.module), None, {}, model.weights_sha256)
    train = shared_path("data", "cifar10", "train.zip")
    sampled = []  # how collect samples the storage of `--data cifar10/train`: the first file of 8 classes
    with zipfile.ZipFile(train) as zf:
        for name in sorted(n for n in zf.namelist() if n.endswith(".jpg")):
            folder = tmp_path / "sampled" / name.split("/")[-2]
            if len(sampled) < 8 and not folder.exists():
                folder.mkdir(parents=True)
                (folder / "first.jpg").write_bytes(zf.read(name))
                sampled.append(folder / "first.jpg")
    source = SourceRecord("A", "after-training", fact(r"data `([^`]+)`"), int(fact(r", (\d+) images")), [], compression=compression_record(sampled))
    manifest = Manifest(record, taps, model.preprocessing, source, "float32", [], fact(r" on (\S+Z)\n"),
                        tool_version=fact(r"written by sowmeta (\S+) on"))
    # the size line is the saved bundle's: save one of the same shapes (the values do not change the size)
    stats = {t.name: TapStats(torch.zeros(10, t.channels), torch.ones(10, t.channels), torch.zeros(t.channels), torch.ones(t.channels)) for t in taps}
    saved = Bundle(manifest, stats, torch.full((10,), 5000), list(range(10))).save(tmp_path / "b")
    rebuilt = card_from_manifest(Bundle.read_manifest(saved), "ORG/cifar-resnet56/sowmeta", license="bsd-2-clause",
                                 manifest_size=(saved / "sowmeta.json").stat().st_size, weights_in_repo=True)
    assert rebuilt.rstrip("\n") == card.rstrip("\n")
