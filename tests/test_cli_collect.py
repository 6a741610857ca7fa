"""CLI: collect / inspect / validate, with one-line errors and exit codes for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sowmeta.cli.main import main

from conftest import write_image_folder

TINY = ["--model", "conftest:tiny_net", "--weights", "none", "--crop", "12", "--workers", "0"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: str):
    return runner.invoke(main, list(args), catch_exceptions=False)


def test_collect_inspect_validate(runner, image_folder: Path, tmp_path: Path):
    out = tmp_path / "b"
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(out), "--batch-size", "4")
    assert r.exit_code == 0, r.output
    assert "15 images" in r.output
    r = run(runner, "inspect", str(out), "--json")
    s = json.loads(r.output)
    assert [c["images"] for c in s["classes"]] == [5, 5, 5, 0]
    assert [t["name"] for t in s["taps"]] == ["bn1", "bn2"] and s["model"]["architecture"] == "conftest:tiny_net"
    assert s["preprocessing"]["crop"] == 12
    r = run(runner, "inspect", str(out))
    assert r.exit_code == 0 and "bn-input" in r.output and "c2" in r.output
    r = run(runner, "validate", str(out), "--model", "conftest:tiny_net", "--weights", "none")
    assert r.exit_code == 0 and "matches" in r.output


def test_existing_output_and_overwrite(runner, image_folder: Path, tmp_path: Path):
    out = tmp_path / "b"
    out.mkdir()
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(out))
    assert r.exit_code == 1 and "already exists" in r.output and "--overwrite" in r.output
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(out), "--overwrite")
    assert r.exit_code == 0 and (out / "sowmeta.json").exists()


@pytest.mark.parametrize(
    "make,expect",
    [
        (lambda p: (p / "flat").mkdir() or (p / "flat"), "data error"),
        (lambda p: write_image_folder(p / "many", classes=5, per_class=1), "5 class folders"),
        (lambda p: p / "missing", "does not exist"),
    ],
)
def test_bad_data_is_one_line_and_exit_1(runner, tmp_path: Path, make, expect):
    data = make(tmp_path)
    r = run(runner, "collect", *TINY, "--data", str(data), "--out", str(tmp_path / "out"))
    assert r.exit_code == 1
    assert expect in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_validate_reports_corruption_and_mismatch(runner, image_folder: Path, tmp_path: Path):
    out = tmp_path / "b"
    run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(out))
    r = run(runner, "validate", str(out), "--model", "cifar-resnet20", "--weights", "none")
    assert r.exit_code == 1 and "does not match the model" in r.output
    f = out / "stats.safetensors"
    f.write_bytes(f.read_bytes()[:-8])
    r = run(runner, "validate", str(out))
    assert r.exit_code == 1 and "checksum mismatch" in r.output
    r = run(runner, "inspect", str(tmp_path / "nope"))
    assert r.exit_code == 1 and "bundle not found" in r.output


def test_seeds_mode_and_option_errors(runner, tmp_path: Path):
    seeds = write_image_folder(tmp_path / "seeds", classes=2, per_class=1)
    for d in seeds.iterdir():
        d.rename(seeds / d.name.removeprefix("c"))  # folders named by class index
    r = run(runner, "collect", *TINY, "--seeds", str(seeds), "--out", str(tmp_path / "s"), "--keep-rejected")
    assert r.exit_code == 0, r.output
    assert "scenario C" in r.output
    r = run(runner, "collect", *TINY, "--out", str(tmp_path / "x"))
    assert r.exit_code == 1 and "exactly one of --data" in r.output
    r = run(runner, "collect", "--model", "resnet-9000", "--weights", "none", "--data", str(seeds), "--out", str(tmp_path / "y"))
    assert r.exit_code == 1 and "unknown model" in r.output
