"""Publishing the statistics next to the model (issue 16): subfolders of a model's own repository, weights by Hub id,
tags, the model card's section, and a card whose commands run as written. The Hub is the loopback test server."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_image_folder
from hub_server import HubServer
from registry_fixtures import HUB_ORG, fake_hub, make_bundle, registry_env  # noqa: F401  (fixtures)
from safetensors.torch import save_file

from sowmeta import errors as E
from sowmeta import registry
from sowmeta.bundle import Bundle
from sowmeta.cli.main import main
from sowmeta.collectors import collect
from sowmeta.models import load_model

REPO = f"{HUB_ORG}/demo-net"
MODEL_README = b"---\nlibrary_name: timm\nlicense: mit\ntags:\n- image-classification\n---\n\n# demo-net\n\nOur model. Do not touch.\n"


@pytest.fixture
def model_repo(fake_hub: HubServer, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:  # noqa: F811
    """A model repository on the Hub (weights + its own card) and a bundle collected on those weights."""
    model = load_model("demo-cnn", weights=None)
    weights = tmp_path / "demo-net.safetensors"
    save_file(model.module.state_dict(), str(weights))
    files = {"demo-net.safetensors": weights.read_bytes(), "README.md": MODEL_README}
    fake_hub.add_repo(REPO, files)
    model = load_model("demo-cnn", weights=str(weights))
    assert (model.weights, model.weights_sha256 is not None) == ("demo-net.safetensors", True)  # no machine path
    collect(model, write_image_folder(tmp_path / "data", classes=4, per_class=3, size=32), dataset="demo-shapes", out=tmp_path / "bundle")
    return tmp_path / "bundle", files


def test_push_into_a_subfolder_touches_only_it(model_repo, fake_hub: HubServer):  # noqa: F811
    bundle, before = model_repo
    commits = len(fake_hub.state.repos[REPO].commits)
    pushed = registry.push(bundle, f"{REPO}/sowmeta", registry="hub", license="mit")
    after = _files(fake_hub, REPO)
    for name, data in before.items():
        assert after[name] == data, name  # the model's weights and its own card, byte-identical
    changed = {p for p in after if p not in before and p != ".gitattributes"}
    assert changed == {"sowmeta/sowmeta.json", "sowmeta/stats.safetensors", "sowmeta/README.md"}
    assert fake_hub.state.commit_ops[-1:] == [["file", "file", "file"]]  # one commit, three files
    assert len(fake_hub.state.repos[REPO].commits) == commits + 1
    pulled = registry.pull(f"{REPO}/sowmeta", registry="hub")
    snapshot = pulled.path.parent
    got = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    assert got == ["sowmeta/README.md", "sowmeta/sowmeta.json", "sowmeta/stats.safetensors"]  # no other file downloaded
    assert pulled.commit == pushed.commit and (pulled.path / "sowmeta.json").read_bytes() == (bundle / "sowmeta.json").read_bytes()
    assert Bundle.from_pretrained(f"{REPO}/sowmeta").manifest.model.architecture == "demo-cnn"


def _files(server: HubServer, repo: str) -> dict[str, bytes]:
    """Every file at the head of main, read through the server's resolve endpoint (real HTTP)."""
    import urllib.request

    import json

    with urllib.request.urlopen(f"{server.url}/api/models/{repo}/tree/main?recursive=true") as f:
        names = [e["path"] for e in json.load(f) if e["type"] == "file"]
    return {n: urllib.request.urlopen(server.file_url(repo, "main", n)).read() for n in names}


def test_a_model_card_is_never_replaced(model_repo, fake_hub: HubServer):  # noqa: F811
    bundle, before = model_repo
    with pytest.raises(E.ConfigError, match="has a model card of its own.*push into a subfolder"):
        registry.push(bundle, REPO, registry="hub")
    assert _files(fake_hub, REPO)["README.md"] == MODEL_README
    registry.push(bundle, f"{REPO}/sowmeta", registry="hub", update_model_card=True)
    card = _files(fake_hub, REPO)["README.md"]
    assert card.startswith(MODEL_README) and card.count(b"<!-- sowmeta:begin -->") == 1
    assert b"sowmeta synthesize --bundle sowmeta-test/demo-net/sowmeta" in card
    registry.push(bundle, f"{REPO}/sowmeta", registry="hub", update_model_card=True)  # refreshed, not added twice
    again = _files(fake_hub, REPO)["README.md"]
    assert again.count(b"<!-- sowmeta:begin -->") == 1 and again.startswith(MODEL_README) and again.endswith(b"<!-- sowmeta:end -->\n")
    edited = MODEL_README + b"\nMore text after.\n"
    from sowmeta.registry.card import model_card_section

    refreshed = model_card_section(again.decode() + "\nMore text after.\n", f"{REPO}/sowmeta", Bundle.read_manifest(bundle))
    assert refreshed.startswith(MODEL_README.decode()) and refreshed.endswith("\nMore text after.\n") and edited


def test_tags_never_move(model_repo, fake_hub: HubServer):  # noqa: F811
    bundle, _ = model_repo
    first = registry.push(bundle, f"{REPO}/sowmeta", registry="hub", tag="v1")
    assert first.revision == "v1" and registry.pull(f"{REPO}/sowmeta@v1", registry="hub").commit == first.commit
    with pytest.raises(E.RegistryError, match="already has a tag 'v1'; tags never move"):
        registry.push(bundle, f"{REPO}/sowmeta", registry="hub", tag="v1")
    local = registry.push(bundle, "me/demo/stats", registry="local", tag="v1")
    assert registry.pull("me/demo/stats@v1").commit == local.commit
    assert [e.name for e in registry.list_bundles() if e.backend == "local"] == ["me/demo/stats"]


def test_weights_by_hub_id_are_found_and_checked(model_repo, fake_hub: HubServer, tmp_path: Path):  # noqa: F811
    bundle, files = model_repo
    registry.push(bundle, f"{REPO}/sowmeta", registry="hub")
    r = CliRunner().invoke(main, ["synthesize", "--bundle", f"{REPO}/sowmeta", "--registry", "hub", "--classes", "c1", "--per-class", "2",
                                  "--iterations", "3", "--out", str(tmp_path / "s.h5"), "-q", "--allow-low-confidence"])
    assert r.exit_code == 0, r.output  # no --weights: found beside the bundle, in the model's own repository
    tampered = bytearray(files["demo-net.safetensors"])
    tampered[-1] ^= 0xFF
    fake_hub.add_repo(f"{HUB_ORG}/other", {"demo-net.safetensors": bytes(tampered)})
    r = CliRunner().invoke(main, ["synthesize", "--bundle", f"{REPO}/sowmeta", "--registry", "hub", "--weights",
                                  f"hf://{HUB_ORG}/other/demo-net.safetensors", "--out", str(tmp_path / "t.h5"), "-q"])
    assert r.exit_code == 1 and "not the weights the statistics were recorded with" in r.output and len(r.output.strip().splitlines()) == 1
    model = load_model("demo-cnn", weights=f"hf://{REPO}/demo-net.safetensors")  # hf:// works wherever a weights file does
    commit = fake_hub.state.repos[REPO].branches["main"]
    assert model.weights == f"hf://{REPO}@{commit}/demo-net.safetensors"


def test_weights_the_bundle_names_are_announced_before_they_are_downloaded(model_repo, fake_hub: HubServer):  # noqa: F811
    """One line naming the weights and where they come from, while the file is not yet in the Hugging Face cache."""
    from sowmeta.env import hf_hub_cache
    from sowmeta.synth.job import open_model

    bundle, _ = model_repo
    registry.push(bundle, f"{REPO}/sowmeta", registry="hub")
    notes: list[tuple[str, bool]] = []
    opened = open_model(f"{REPO}/sowmeta", registry="hub", notice=lambda line: notes.append((line, any(hf_hub_cache().rglob("demo-net.safetensors")))))
    assert len(notes) == 1 and notes[0][1] is False, notes  # said before the download
    assert "demo-net.safetensors" in notes[0][0] and f"from its repository {REPO}" in notes[0][0] and "weights=FILE" in notes[0][0]  # the API speaks API
    assert opened.model.weights.startswith(f"hf://{REPO}@") and any(hf_hub_cache().rglob("demo-net.safetensors"))
    quiet: list[str] = []
    open_model(f"{REPO}/sowmeta", registry="hub", weights="none", notice=quiet.append)
    assert quiet == []  # the user's own --weights: nothing fetched, nothing said


def test_the_cards_commands_run_as_written(model_repo, fake_hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    bundle, _ = model_repo
    registry.push(bundle, f"{REPO}/sowmeta", registry="hub", license="mit")
    card = _files(fake_hub, REPO)["sowmeta/README.md"].decode()
    front = card.split("\n---\n", 1)[0]
    assert "library_name: sowmeta" in front and "license: mit" in front and "- demo-shapes" in front and "/tmp" not in card
    block = re.search(r"## How to use\n\n```bash\n(.*?)```", card, re.S).group(1)
    commands = [shlex.split(line) for line in block.strip().splitlines()]
    assert commands[0][:2] == ["pip", "install"]
    monkeypatch.chdir(tmp_path)
    for argv in commands[1:]:
        assert argv[0] == "sowmeta"
        r = CliRunner().invoke(main, argv[1:] + ["--allow-low-confidence"] * (argv[1] == "synthesize"))
        assert r.exit_code == 0, (argv, r.output)
    assert any(tmp_path.glob("*.h5")) and any(tmp_path.glob("*.png"))


def test_a_subfolder_bundle_needs_its_model_repository_and_weights(model_repo, fake_hub: HubServer, tmp_path: Path):  # noqa: F811
    """Pushing ORG/NAME/SUB refuses a missing model repository or one without the weights the manifest names (creating
    nothing), and ``with_weights`` uploads the checked weights file in the same commit; the CLI says ``--with-weights``."""
    bundle, files = model_repo
    weights = tmp_path / "demo-net.safetensors"
    with pytest.raises(E.NotFoundError, match=r"does not exist on the Hub.*with_weights=FILE"):
        registry.push(bundle, f"{HUB_ORG}/fresh-net/sowmeta", registry="hub", update_model_card=True)
    assert f"{HUB_ORG}/fresh-net" not in fake_hub.state.repos  # nothing created
    r = CliRunner().invoke(main, ["push", str(bundle), f"{HUB_ORG}/fresh-net/sowmeta", "--registry", "hub"])
    assert r.exit_code == 1 and "--with-weights FILE" in r.stderr and "with_weights" not in r.stderr, r.output

    fake_hub.add_repo(f"{HUB_ORG}/empty-net", {"README.md": MODEL_README})
    commits = len(fake_hub.state.repos[f"{HUB_ORG}/empty-net"].commits)
    with pytest.raises(E.NotFoundError, match="does not hold demo-net.safetensors, the weights the bundle was recorded on"):
        registry.push(bundle, f"{HUB_ORG}/empty-net/sowmeta", registry="hub")
    assert len(fake_hub.state.repos[f"{HUB_ORG}/empty-net"].commits) == commits

    other = tmp_path / "other.safetensors"
    other.write_bytes(files["demo-net.safetensors"][:-1] + b" ")
    with pytest.raises(E.ConfigError, match="is not the weights file the bundle was recorded on"):
        registry.push(bundle, f"{HUB_ORG}/fresh-net/sowmeta", registry="hub", with_weights=other)
    r = CliRunner().invoke(main, ["push", str(bundle), f"{HUB_ORG}/fresh-net/sowmeta", "--registry", "hub", "--with-weights", str(weights),
                                  "--update-model-card", "--license", "mit"])
    assert r.exit_code == 0, r.output
    after = _files(fake_hub, f"{HUB_ORG}/fresh-net")
    assert after["demo-net.safetensors"] == files["demo-net.safetensors"] and "sowmeta/sowmeta.json" in after
    card = after["README.md"].decode()
    assert card.startswith("---\n") and "license: mit" in card.split("\n---", 1)[0] and "sowmeta:begin" in card  # a card with YAML
    pulled = CliRunner().invoke(main, ["synthesize", "--bundle", f"{HUB_ORG}/fresh-net/sowmeta", "--registry", "hub", "--classes", "c1",
                                       "--per-class", "1", "--iterations", "2", "--allow-low-confidence", "--out", str(tmp_path / "s.h5"), "-q"])
    assert pulled.exit_code == 0, pulled.output  # the weights the manifest names are found beside the bundle


def test_a_taken_tag_is_refused_before_any_commit(model_repo, fake_hub: HubServer, make_bundle):  # noqa: F811
    """On the Hub a taken tag moves no branch and adds no commit; in the local registry it stores no revision."""
    first, second = make_bundle(seed=1), make_bundle(seed=2)
    registry.push(first, f"{REPO}/sowmeta", registry="hub", tag="v1")
    repo = fake_hub.state.repos[REPO]
    main_before, commits = repo.branches["main"], len(repo.commits)
    with pytest.raises(E.RegistryError, match="already has a tag 'v1'.*nothing was pushed"):
        registry.push(second, f"{REPO}/sowmeta", registry="hub", tag="v1")
    assert (repo.branches["main"], len(repo.commits)) == (main_before, commits)

    registry.push(first, "me/demo/stats", registry="local", tag="v1")
    stored = sorted(str(e.path) for e in registry.list_bundles(registry="local") if e.backend == "local")
    with pytest.raises(E.RegistryError, match="already has a tag 'v1'.*nothing was pushed"):
        registry.push(second, "me/demo/stats", registry="local", tag="v1")
    assert sorted(str(e.path) for e in registry.list_bundles(registry="local") if e.backend == "local") == stored
    assert len(stored) == 1
