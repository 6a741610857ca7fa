"""CLI: ``sowmeta evaluate`` and ``sowmeta distill``, --model/--weights pairs, one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sowmeta.cli.evaluate_cmds import pair_models
from sowmeta.cli.main import main
from sowmeta.errors import ConfigError

from conftest import write_image_folder
from synth_files import write_synth_h5

# demo-cnn: a registered 4-class, 32 px model, cheap with random weights
MODEL = ["--model", "demo-cnn", "--weights", "none"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write_synth_h5(tmp_path / "s.h5", classes=4, per_class=6, size=32), write_image_folder(tmp_path / "real", classes=4, per_class=4, size=32)


def run(runner: CliRunner, *args: str):
    return runner.invoke(main, list(args), catch_exceptions=False)


def one_line_error(r, expect: str) -> None:
    assert r.exit_code == 1, r.output
    assert expect in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_models_pair_with_weights_in_order():
    assert pair_models(("a", "b"), ("w1", "w2")) == [("a", "w1"), ("b", "w2")]
    assert pair_models(("a", "b"), ()) == [("a", "DEFAULT"), ("b", "DEFAULT")]
    with pytest.raises(ConfigError, match="2 --model but 1 --weights"):
        pair_models(("a", "b"), ("w1",))


def test_evaluate_json_and_table(runner, files, tmp_path: Path):
    synth, real = files
    r = run(runner, "evaluate", "--data", str(synth), *MODEL, "--reference", str(real), "--json", "--workers", "0", "--kid-subsets", "5")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["images"] == 24 and report["accuracy"][0]["network"] == "demo-cnn"
    assert report["distances"]["network"] == "demo-cnn" and report["distances"]["reference_images"] == 16
    assert report["inception_score"]["network"] == "demo-cnn" and report["feature_network"] == "demo-cnn"
    assert report["diversity"]["network"] == "demo-cnn" and len(report["diversity"]["per_class"]) == 4
    r = run(runner, "evaluate", "--data", str(synth), "--model", "demo-cnn", "--model", "demo-cnn", "--feature-model", "demo-cnn",
            "--feature-weights", "none", "--reference", str(real), "--classes", "c0,2", "--workers", "0", "--kid-subsets", "5")
    assert r.exit_code == 1 and "demo-cnn has no downloadable weights" in r.output  # no --weights means DEFAULT weights
    r = run(runner, "evaluate", "--data", str(synth), *MODEL, "--feature-model", "demo-cnn", "--feature-weights", "none", "--reference", str(real),
            "--classes", "c0,2", "--sheets", str(tmp_path / "sheets"), "--workers", "0", "--kid-subsets", "5")
    assert r.exit_code == 0, r.output
    assert "top-1 accuracy" in r.output and "Fréchet distance" in r.output and "0 c0" in r.output and "1 c1" not in r.output
    assert "softmax of demo-cnn" in r.output and "features for distances and diversity: demo-cnn" in r.output  # each score names its network
    assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == ["000-c0.png", "002-c2.png"]


@pytest.mark.parametrize(
    "args,expect",
    [
        (["--data", "missing.h5", *MODEL], "does not exist"),
        (["--data", "{synth}", "--model", "demo-cnn", "--model", "demo-cnn", "--weights", "none"], "2 --model but 1 --weights"),
        (["--data", "{synth}", "--model", "demo-cnn", "--weights", "missing.safetensors"], "does not exist"),
        (["--data", "{synth}", "--model", "no-such-model", "--weights", "none"], "unknown model 'no-such-model'"),
        (["--data", "{synth}", "--model", "demo-cn", "--weights", "none"], "did you mean 'demo-cnn'?"),
        (["--data", "{synth}"], "at least one --model"),
        (["--data", "{synth}", *MODEL, "--classes", "dog"], "class 'dog' is neither a class index nor a label"),
    ],
)
def test_evaluate_bad_input(runner, files, tmp_path: Path, args, expect):
    synth, _ = files
    r = run(runner, "evaluate", *[a.format(synth=synth) if a.startswith("{") else str(tmp_path / a) if a.endswith(".h5") else a for a in args])
    one_line_error(r, expect)


def test_distill_run_resume_and_refusals(runner, files, tmp_path: Path):
    synth, real = files
    out = tmp_path / "kd"
    base = ["distill", "--data", str(synth), *MODEL, "--student", "demo-cnn", "--test", str(real),
            "--out", str(out), "--epochs", "1", "--batch-size", "8", "--workers", "0"]
    r = run(runner, *base, "-q")
    assert r.exit_code == 0, r.output
    assert "student demo-cnn: test top-1" in r.output
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "student.safetensors", "metrics.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["temperature"] == 5.0 and metrics["config"]["batch_size"] == 8

    one_line_error(run(runner, *base), "already exists")
    one_line_error(run(runner, *base, "--resume", "--overwrite"), "not both")
    one_line_error(run(runner, *base, "--resume", "--lr", "0.5"), "other settings")
    r = run(runner, *base, "--resume")
    assert r.exit_code == 0 and "test top-1 per epoch" in r.output


@pytest.mark.parametrize(
    "change,expect",
    [
        ({"--data": "missing.h5"}, "does not exist"),
        ({"--weights": "nope.safetensors"}, "weights error"),
        ({"--model": "demo-cnx"}, "did you mean 'demo-cnn'?"),
        ({"--student": "no-such-model"}, "model error"),
        ({"--test": "missing-dir"}, "does not exist"),
    ],
)
def test_distill_bad_input(runner, files, tmp_path: Path, change, expect):
    synth, real = files
    opts = {"--data": str(synth), "--model": "demo-cnn", "--weights": "none", "--student": "demo-cnn", "--test": str(real), "--out": str(tmp_path / "kd")}
    opts.update({k: v if k in ("--model", "--student") else str(tmp_path / v) for k, v in change.items()})
    r = run(runner, "distill", *[x for kv in opts.items() for x in kv], "--epochs", "1", "--workers", "0")
    one_line_error(r, expect)
    assert not (tmp_path / "kd").exists()


def test_a_compressed_reference_gets_a_note(runner, files, tmp_path: Path):
    synth, _ = files
    jpegs = write_image_folder(tmp_path / "jpegs", classes=4, per_class=4, size=32, fmt="jpg")  # Pillow's default: quality 75, 4:2:0
    r = run(runner, "evaluate", "--data", str(synth), *MODEL, "--reference", str(jpegs), "--workers", "0", "--kid-subsets", "5")
    assert r.exit_code == 0 and "note: the reference images are 32x32 px JPEGs of quality about 75" in " ".join(r.output.split())
