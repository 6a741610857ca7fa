"""``sowmeta push / pull / list``: thin commands, JSON output, and one-line errors with exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hub_server import HubServer
from registry_fixtures import HUB_ORG, bundle_bytes, fake_hub, make_bundle, registry_env  # noqa: F401  (fixtures)

from sowmeta.cli.main import main

pytestmark = pytest.mark.usefixtures("registry_env")

NAME = f"{HUB_ORG}/tiny-cli"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error_line(result: Result, prefix: str) -> str:
    """The command failed with exit code 1 and printed exactly one line, ``error: <prefix>: ...``, on stderr."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {prefix}: "), lines[0]
    assert result.stdout == ""
    return lines[0]


def test_local_push_pull_list(make_bundle, tmp_path: Path) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    pushed = run("push", str(src), NAME, "--json")
    assert pushed.exit_code == 0, pushed.output
    info = json.loads(pushed.stdout)
    assert (info["name"], info["revision"], info["backend"]) == (NAME, "main", "local")

    pulled = run("pull", NAME)
    assert pulled.exit_code == 0, pulled.output
    path = Path(pulled.stdout.strip().splitlines()[-1])
    assert bundle_bytes(path) == bundle_bytes(src)
    assert "verified" in pulled.stderr

    out = tmp_path / "copy"
    pinned = run("pull", f"{NAME}@{info['commit'][:10]}", "--to", str(out))
    assert pinned.exit_code == 0, pinned.output
    assert bundle_bytes(out) == bundle_bytes(src)

    listed = run("list", "--json")
    assert listed.exit_code == 0
    assert [(e["name"], e["commit"], e["refs"]) for e in json.loads(listed.stdout)["bundles"]] == [(NAME, info["commit"], ["main"])]
    table = run("list")
    assert NAME in table.stdout and info["commit"][:12] in table.stdout


def test_hub_push_pull_list(fake_hub: HubServer, make_bundle, tmp_path: Path) -> None:  # noqa: ANN001
    first, second = make_bundle(seed=1), make_bundle(seed=2)
    a = run("push", str(first), NAME, "--registry", "hub", "--license", "mit", "-m", "v1 of the stats", "--json")
    assert a.exit_code == 0, a.output
    commit = json.loads(a.stdout)["commit"]
    assert fake_hub.state.repos[NAME].commits[commit].summary == "v1 of the stats"
    assert b"license: mit" in fake_hub.state.repos[NAME].commits[commit].files["README.md"]
    b = run("push", str(second), NAME, "--registry", "hub")
    assert b.exit_code == 0 and "pushed" in b.stdout

    out = tmp_path / "first"
    pulled = run("pull", f"{NAME}@{commit}", "--registry", "hub", "--to", str(out))
    assert pulled.exit_code == 0, pulled.output
    assert Path(pulled.stdout.strip()) == out and bundle_bytes(out) == bundle_bytes(first)

    listed = run("list", "--registry", "hub", "--json")
    assert [e["name"] for e in json.loads(listed.stdout)["bundles"]] == [NAME]


def test_hub_errors_are_one_line(fake_hub: HubServer, make_bundle, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    line = one_error_line(run("pull", f"{HUB_ORG}/missing", "--registry", "hub"), "not found")
    assert f"{HUB_ORG}/missing" in line and "HF_TOKEN" in line
    assert run("push", str(src), NAME, "--registry", "hub").exit_code == 0
    line = one_error_line(run("pull", f"{NAME}@v404", "--registry", "hub"), "revision not found")
    assert "v404" in line
    monkeypatch.delenv("HF_TOKEN")
    line = one_error_line(run("push", str(src), NAME, "--registry", "hub"), "authentication failed")
    assert "401" in line and "HF_TOKEN" in line
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_error_line(run("pull", f"{HUB_ORG}/never", "--registry", "hub"), "offline")


def test_local_errors_are_one_line(make_bundle, tmp_path: Path) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    one_error_line(run("pull", NAME), "not found")
    one_error_line(run("push", str(src), NAME, "--private"), "invalid option")
    one_error_line(run("push", str(tmp_path / "nothing"), NAME), "bundle not found")
    assert run("push", str(src), NAME).exit_code == 0
    one_error_line(run("pull", f"{NAME}@nope"), "revision not found")
    one_error_line(run("pull", "not a name"), "invalid option")
    one_error_line(run("pull", NAME, "--to", str(src)), "output exists")


def test_bundle_arguments_take_names_and_revisions(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    """inspect and validate accept a directory, ORG/NAME and ORG/NAME@REV, from either registry."""
    three, five = make_bundle(seed=1, num_classes=3), make_bundle(seed=2, num_classes=5)
    a = json.loads(run("push", str(three), NAME, "--json").stdout)
    b = json.loads(run("push", str(five), NAME, "--revision", "v2", "--json").stdout)
    h = json.loads(run("push", str(five), NAME, "--registry", "hub", "--json").stdout)

    def classes(*args: str) -> int:
        result = run("inspect", *args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["model"]["num_classes"]

    assert classes(str(three)) == 3
    assert classes(NAME) == 3 and classes(f"{NAME}@v2") == 5
    assert classes(f"{NAME}@{a['commit'][:12]}") == 3 and classes(f"{NAME}@{b['commit']}") == 5
    assert classes(f"{NAME}@{h['commit']}", "--registry", "hub") == 5

    ok = run("validate", f"{NAME}@v2")
    assert ok.exit_code == 0 and b["path"] in ok.stdout.replace("\n", "")
    one_error_line(run("validate", f"{NAME}@v9"), "revision not found")
    one_error_line(run("inspect", f"{HUB_ORG}/missing", "--registry", "hub"), "not found")


def test_list_shows_local_and_cached_bundles(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    src = make_bundle(seed=1)
    local_commit = json.loads(run("push", str(src), f"{HUB_ORG}/local-one", "--json").stdout)["commit"]
    hub_commit = json.loads(run("push", str(src), NAME, "--registry", "hub", "--json").stdout)["commit"]
    assert run("pull", NAME, "--registry", "hub").exit_code == 0
    fake_hub.stop()

    listed = json.loads(run("list", "--json").stdout)["bundles"]
    assert {(e["backend"], e["name"], e["commit"]) for e in listed} == {
        ("local", f"{HUB_ORG}/local-one", local_commit), ("hub-cache", NAME, hub_commit)
    }
    table = run("list").stdout
    assert "local registry" in table and "Hub cache" in table and hub_commit[:12] in table
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        assert len(json.loads(run("list", "--json").stdout)["bundles"]) == 2, "offline, what is at hand is still listed"
        one_error_line(run("list", "--registry", "hub"), "offline")


def test_gated_and_unreachable_are_one_line(fake_hub: HubServer, make_bundle) -> None:  # noqa: ANN001
    fake_hub.add_repo("bob/gated", bundle_bytes(make_bundle(seed=1)), gated=True)
    line = one_error_line(run("pull", "bob/gated", "--registry", "hub"), "gated repository")
    assert "request access" in line and "HF_TOKEN" in line
    fake_hub.stop()
    line = one_error_line(run("pull", NAME, "--registry", "hub"), "network error")
    assert "cannot reach" in line and "HF_ENDPOINT" in line


def test_what_list_shows_resolves_and_copies_whole(fake_hub: HubServer, make_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Names and commits ``list`` and ``push`` print are the ones other commands take: a subfolder bundle pulled from the Hub is
    listed with the cache's real folder, resolves by name in ``inspect`` with no network, and the printed commit pulls."""
    from sowmeta import env

    src = make_bundle(seed=1)
    sub = f"{HUB_ORG}/model-one/sowmeta"
    fake_hub.add_repo(f"{HUB_ORG}/model-one", {"README.md": b"# a model\n"})
    pushed = run("push", str(src), sub, "--registry", "hub")
    commit = json.loads(run("pull", sub, "--registry", "hub", "--json").stdout)["commit"]
    assert f"commit {commit} " in pushed.stdout  # the whole id, which pulls
    assert run("pull", sub, "--registry", "hub", "--revision", commit, "-q").exit_code == 0
    fake_hub.stop()

    table = run("list").stdout  # not a terminal: nothing is cut to 80 columns
    assert f"Hub cache {env.hf_hub_cache()}" in table and sub in table and commit in table
    shown = run("inspect", sub)
    assert shown.exit_code == 0 and "verified" in shown.stdout, shown.output
    (tmp_path / "work" / "bundles").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    line = one_error_line(run("inspect", "bundles/nonexistent"), "not found")
    assert "is not a bundle directory (bundles/ has no such folder)" in line
