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
    assert [t["name"] for t in s["taps"]] == ["bn1", "bn2"] and (s["model"]["architecture"], s["model"]["factory"]) == ("custom", "conftest:tiny_net")
    assert (s["preprocessing"]["crop"], s["preprocessing"]["resize"]) == (12, 14)  # --crop keeps the 256/224 ratio
    assert s["image_var"] is True
    r = run(runner, "inspect", str(out))
    assert r.exit_code == 0 and "bn-input" in r.output and "c2" in r.output and "image spread (image_var): recorded" in r.output
    r = run(runner, "validate", str(out), "--model", "conftest:tiny_net", "--weights", "none")
    assert r.exit_code == 0 and "matches" in r.output


def test_base_model_is_recorded_for_the_model_card(runner, image_folder: Path, tmp_path: Path):
    from sowmeta.registry.card import render_card

    out = tmp_path / "b"
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(out), "--base-model", "acme/tiny-net")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "sowmeta.json").read_text())["model"]["base_model"] == "acme/tiny-net"
    assert "\nbase_model: acme/tiny-net\n" in render_card(out, "acme/tiny-cc")
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(tmp_path / "x"), "--base-model", "not a name")
    _one_line_error(r, "is not a Hub model id")
    assert not (tmp_path / "x").exists()


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
        (lambda p: write_image_folder(p / "many", classes=5, per_class=1), "class folder '4_c4' names class 4, but the model has classes 0..3"),
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


def _one_line_error(r, expect: str) -> None:
    assert r.exit_code == 1, r.output
    assert expect in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_corrupt_images_are_reported_and_strict_fails(runner, image_folder: Path, tmp_path: Path):
    (image_folder / "1_c1" / "broken.png").write_bytes(b"not a png")
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    assert "skipped 1 undecodable images" in r.output and "broken.png" in r.output
    assert "1 classes have no images" in r.output  # 4 model outputs, 3 class folders: flagged
    assert json.loads(run(runner, "inspect", str(tmp_path / "b"), "--json").output)["source"]["skipped_images"] == 1
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(tmp_path / "s"), "--strict")
    _one_line_error(r, "corrupt image")
    assert "broken.png" in r.output and not (tmp_path / "s").exists()


def test_preprocessing_options_are_recorded_and_checked(runner, image_folder: Path, tmp_path: Path):
    out = tmp_path / "b"
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(out), "--resize", "14", "--mean", "0.5,0.4,0.3", "--std", "0.2,0.25,0.3")
    assert r.exit_code == 0, r.output
    p = json.loads(run(runner, "inspect", str(out), "--json").output)["preprocessing"]
    assert (p["crop"], p["resize"], p["mean"], p["std"], p["source"]) == (12, 14, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], "options")
    for opt, value, expect in [("--mean", "0.5,0.5", "three comma-separated"), ("--mean", "a,b,c", "three comma-separated"), ("--std", "0.2,0,0.2", "positive")]:
        r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(tmp_path / "x"), opt, value)
        _one_line_error(r, expect)
    assert not (tmp_path / "x").exists()


def test_option_errors_for_taps_weights_and_limits(runner, image_folder: Path, tmp_path: Path):
    out = str(tmp_path / "x")
    _one_line_error(run(runner, "collect", *TINY, "--data", str(image_folder), "--out", out, "--taps", "nope*"), "tap error")
    _one_line_error(run(runner, "collect", "--model", "cifar-resnet20", "--data", str(image_folder), "--out", out), "no downloadable weights")
    _one_line_error(
        run(runner, "collect", "--model", "cifar-resnet20", "--weights", str(tmp_path / "none.pt"), "--data", str(image_folder), "--out", out),
        "does not exist",
    )
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", out, "--limit-per-class", "0")
    assert r.exit_code == 2 and "--limit-per-class" in r.output
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", out, "--limit-per-class", "2", "--taps", "conv*,fc:in")
    assert r.exit_code == 0, r.output
    s = json.loads(run(runner, "inspect", out, "--json").output)
    assert [c["images"] for c in s["classes"]] == [2, 2, 2, 0] and s["source"]["images_per_class_limit"] == 2
    assert [(t["name"], t["kind"], t["channels"]) for t in s["taps"]] == [
        ("conv1", "conv-output", 6), ("conv2", "conv-output", 12), ("conv3", "conv-output", 12), ("fc:in", "input", 12)
    ]


def test_fused_collection_validates_against_the_model(runner, image_folder: Path, tmp_path: Path):
    out = tmp_path / "f"
    r = run(runner, "collect", *TINY, "--data", str(image_folder), "--out", str(out), "--fuse", "--dtype", "float16", "--shard-size", "300")
    assert r.exit_code == 0, r.output
    s = json.loads(run(runner, "inspect", str(out), "--json").output)
    assert s["model"]["fused"] is True and s["dtype"] == "float16" and len(s["files"]) > 1
    assert [t["kind"] for t in s["taps"]] == ["conv-output"] * 3
    r = run(runner, "validate", str(out), "--model", "conftest:tiny_net", "--weights", "none")
    assert r.exit_code == 0 and "matches" in r.output, r.output


def test_rejected_seeds_are_reported_and_excluded(runner, tmp_path: Path):
    """The same image under all four classes: the model predicts one of them, the other three are rejected."""
    pool = write_image_folder(tmp_path / "pool", classes=1, per_class=1)
    image = next((pool / "0_c0").iterdir())
    seeds = tmp_path / "seeds"
    for k in range(4):
        (seeds / str(k)).mkdir(parents=True)
        (seeds / str(k) / "seed.png").write_bytes(image.read_bytes())
    r = run(runner, "collect", *TINY, "--seeds", str(seeds), "--out", str(tmp_path / "c"))
    assert r.exit_code == 0, r.output
    assert r.output.count("rejected seed") == 3 and "1 images" in r.output and "scenario C" in r.output
    s = json.loads(run(runner, "inspect", str(tmp_path / "c"), "--json").output)
    assert sum(c["images"] for c in s["classes"]) == 1 and len(s["source"]["rejected_seeds"]) == 3
    r = run(runner, "collect", *TINY, "--seeds", str(seeds), "--out", str(tmp_path / "k"), "--keep-rejected")
    assert r.exit_code == 0 and "4 images" in r.output and "scenario C" in r.output
    assert r.output.count("misclassified seed (kept)") == 3 and "rejected seed" not in r.output


def test_many_rejected_seeds_are_summarised(runner, tmp_path: Path):
    """Two images, each under all four classes: six are rejected, five are named and the rest counted."""
    pool = write_image_folder(tmp_path / "pool", classes=1, per_class=2)
    seeds = tmp_path / "seeds"
    for k in range(4):
        (seeds / str(k)).mkdir(parents=True)
        for i, image in enumerate(sorted((pool / "0_c0").iterdir())):
            (seeds / str(k) / f"seed{i}.png").write_bytes(image.read_bytes())
    r = run(runner, "collect", *TINY, "--seeds", str(seeds), "--out", str(tmp_path / "c"))
    assert r.exit_code == 0, r.output
    assert r.output.count("rejected seed") == 5 and "and 1 more" in r.output and "2 images" in r.output
    s = json.loads(run(runner, "inspect", str(tmp_path / "c"), "--json").output)
    assert len(s["source"]["rejected_seeds"]) == 6


def test_seeds_under_torchrun_are_written_once(tmp_path: Path):
    """`torchrun ... sowmeta collect --seeds`: rank 0 alone checks the seeds and writes the bundle."""
    import os
    import shutil
    import subprocess
    import sys

    bindir = str(Path(sys.executable).parent)
    torchrun, sowmeta_bin = shutil.which("torchrun", path=bindir), shutil.which("sowmeta", path=bindir)
    if torchrun is None or sowmeta_bin is None:
        pytest.skip("torchrun or the sowmeta entry point is not installed beside this python")
    seeds = write_image_folder(tmp_path / "seeds", classes=2, per_class=1)
    for d in seeds.iterdir():
        d.rename(seeds / d.name.removeprefix("c"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", sowmeta_bin, "collect", *TINY, "--seeds", str(seeds), "--out", str(tmp_path / "c"), "--keep-rejected"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote ") == 1 and "2 images" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "seeds"]  # no temporary directory left behind
    (sorted(seeds.iterdir())[0] / "broken.png").write_text("not an image")  # rank 0 fails; rank 1, waiting to leave with it, stays quiet
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", sowmeta_bin, "collect", *TINY, "--seeds", str(seeds), "--out", str(tmp_path / "d")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and out.count("error: data error: cannot decode seed image") == 1, out[-2000:]
    assert "[rank1]" not in out and not (tmp_path / "d").exists()


def test_heavily_compressed_jpegs_get_a_note(runner, tmp_path: Path):
    jpegs = write_image_folder(tmp_path / "jpegs", classes=2, per_class=2, fmt="jpg")  # Pillow's default: quality 75, 4:2:0
    r = run(runner, "collect", *TINY, "--data", str(jpegs), "--out", str(tmp_path / "a"))
    assert r.exit_code == 0 and "note: the images are 12x12 px JPEGs of quality about 75 with 4:2:0" in " ".join(r.output.split())
    r = run(runner, "collect", *TINY, "--seeds", str(jpegs), "--keep-rejected", "--out", str(tmp_path / "b"))
    assert r.exit_code == 0 and "quality about 75" in r.output
    r = run(runner, "collect", *TINY, "--data", str(jpegs), "--out", str(tmp_path / "c"), "--json")
    report = json.loads(r.output)  # stdout is the JSON object alone; the note travels inside it
    assert report["images"] == 4 and any("quality about 75" in note for note in report["notes"])
