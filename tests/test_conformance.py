"""The bundle-format conformance cases (tests/conformance): sowmeta accepts the valid ones and refuses each
invalid one naming the rule it breaks, in ``validate``, in ``Bundle.load``, and in a pull from the registry."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sowmeta.bundle import Bundle
from sowmeta.bundle.rules import RULES
from sowmeta.cli.main import main
from sowmeta.errors import BundleError

HERE = Path(__file__).parent / "conformance"
CASES = sorted(p for kind in ("valid", "invalid") for p in (HERE / kind).iterdir() if p.is_dir())


def expected(case: Path) -> dict:
    return json.loads((case / "expected.json").read_text(encoding="utf-8"))


def _make_cases():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("make_cases", HERE / "make_cases.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["make_cases"] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_committed_cases_are_what_the_script_writes(tmp_path: Path):
    _make_cases().main(tmp_path)
    written = {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    committed = {str(p.relative_to(HERE)): p.read_bytes() for kind in ("valid", "invalid") for p in sorted((HERE / kind).rglob("*")) if p.is_file()}
    assert written.keys() == committed.keys()
    assert [k for k in written if written[k] != committed[k]] == []
    assert max(len(b) for b in written.values()) < 4096  # small enough to read by eye


def test_every_rule_has_an_invalid_case_and_a_section_in_the_spec():
    rules = {expected(c)["rule"] for c in CASES if not expected(c)["valid"]}
    assert rules == set(RULES)
    for case in CASES:
        e = expected(case)
        assert e["valid"] == (case.parent.name == "valid")
        assert e["valid"] or case.name.startswith(e["rule"] + "--")
    spec = (Path(__file__).parent.parent / "docs" / "format.md").read_text(encoding="utf-8")
    section = spec.split("## Rules", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\d+\. \*\*`([a-z0-9-]+)`\*\*", section, re.MULTILINE)
    assert documented == list(RULES)  # the same rules, in the order a reader checks them


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_validate_agrees_with_the_case(case: Path):
    e = expected(case)
    r = CliRunner().invoke(main, ["validate", str(case), "--json"])
    verdict = json.loads(r.output)
    if e["valid"]:
        assert r.exit_code == 0 and verdict["ok"], r.output
    else:
        assert r.exit_code == 1 and verdict["ok"] is False and verdict["rule"] == e["rule"], r.output
        line = CliRunner().invoke(main, ["validate", str(case)]).output.strip()
        assert len(line.splitlines()) == 1 and line.endswith(f"[rule {e['rule']}]"), line


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_load_agrees_with_the_case(case: Path, tmp_path: Path):
    """Every load applies the same rules (a copy, so no remembered check of these files exists)."""
    e = expected(case)
    copy = Path(shutil.copytree(case, tmp_path / case.name))
    if e["valid"]:
        b = Bundle.load(copy)
        assert b.counts.tolist() == e["counts"]
        if e["manifest_sha256"] is not None:
            assert b.manifest.digest == e["manifest_sha256"]
        one = Bundle.load(copy, classes=[2])  # a sliced load of a file checked before
        assert one.counts.tolist() == e["counts"][2:]
    else:
        with pytest.raises(BundleError) as caught:
            Bundle.load(copy, classes=[0])
        assert caught.value.rule == e["rule"], str(caught.value)


def test_valid_digests_are_recomputed_independently():
    """The 1.1-1.3 digest recomputed here from the documented json.dumps form, without sowmeta."""
    for case in CASES:
        e = expected(case)
        if not e["valid"] or e["manifest_sha256"] is None:
            continue
        d = json.loads((case / "sowmeta.json").read_bytes())
        if d["format_version"] in ("1.1", "1.2", "1.3"):
            rest = {k: v for k, v in d.items() if k != "files"}
            text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            assert hashlib.sha256(text.encode()).hexdigest() == e["manifest_sha256"]


def test_a_pull_refuses_an_invalid_bundle_by_its_rule(tmp_path: Path):
    """A bundle stored in the local registry and damaged there is refused on pull, naming the rule."""
    from sowmeta import registry

    reg = tmp_path / "reg"
    good = HERE / "valid" / "1.4-float32"
    stored = registry.push(good, "me/conformance", registry=reg).path
    bad = HERE / "invalid" / "global-pooling--var"
    for name in ("sowmeta.json", "stats.safetensors"):
        (stored / name).chmod(0o644)
        shutil.copyfile(bad / name, stored / name)
    with pytest.raises(BundleError, match=r"\[rule global-pooling\]"):
        registry.pull("me/conformance", registry=reg)
