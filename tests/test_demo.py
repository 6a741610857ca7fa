"""`sowmeta demo` at a reduced size: every stage runs, the report has its numbers, and cc keeps backgrounds better than di."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from sowmeta.demo_data import DEMO_CLASSES, border_stats, make_demo_images


def test_demo_quick_report(tmp_path: Path):
    from sowmeta.cli.main import main

    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["teacher_test_accuracy"] > 0.9
    for mode in ("cc", "di"):
        assert 0.0 <= report["accuracy"][mode] <= 1.0
        assert len(report["background_distance_per_class"][mode]) == len(DEMO_CLASSES)
    assert report["accuracy"]["cc"] >= 0.75
    assert report["background_distance"]["cc"] < report["background_distance"]["di"]
    assert (out / "grid.png").stat().st_size > 0
    assert (out / "registry").is_dir() and (out / "synth-cc.h5").exists() and (out / "synth-di.h5").exists()


def test_demo_classes_have_distinct_backgrounds():
    """The dataset makes the background problem measurable: class border colours differ far more than within a class."""
    x, y = make_demo_images(20, seed=0)
    means = torch.stack([border_stats(x[y == k])[0].mean(0) for k in range(len(DEMO_CLASSES))])
    within = max(float(border_stats(x[y == k])[0].std(0).norm()) for k in range(len(DEMO_CLASSES)))
    between = min(float((means[i] - means[j]).norm()) for i in range(len(means)) for j in range(i))
    assert between > 3 * within
