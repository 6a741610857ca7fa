"""``evaluate``'s floors: per-class KID and FD of the set and of as many held-out real images against the
same rest of the reference, and each classifier's top-1 on those real images, recomputed by hand."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sowmeta.errors import DataError
from sowmeta.evaluation import evaluate
from sowmeta.evaluation.metrics import per_class_kernel_distance, split_per_class

from conftest import write_image_folder
from synth_files import write_synth_h5
from test_evaluate import manual_features, manual_logits, np_frechet, np_mmd2, read_folder, tiny


def test_split_per_class_holds_out_the_asked_counts_of_each_class():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 0, 3])
    held, rest = split_per_class(labels, [2, 1, 0], seed=4)
    assert sorted(held.tolist() + rest.tolist()) == list(range(10))  # a partition
    assert torch.bincount(labels[held], minlength=4).tolist() == [2, 1, 0, 0]
    assert held.tolist() == sorted(held.tolist()) and rest.tolist() == sorted(rest.tolist())
    assert torch.equal(split_per_class(labels, [2, 1, 0], seed=4)[0], held)  # seeded
    picks = {tuple(split_per_class(labels, [2], seed=s)[0].tolist()) for s in range(20)}
    assert len(picks) > 1  # random, not the first rows
    with pytest.raises(DataError, match="cannot hold out 4 images of class 1"):
        split_per_class(labels, [0, 4])


def test_per_class_kid_is_the_unbiased_mmd_of_each_class():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 4)), rng.normal(0.3, 1.2, size=(8, 4))
    la = lb = np.repeat([0, 2], 4)
    got = per_class_kernel_distance(torch.from_numpy(a), torch.from_numpy(la), torch.from_numpy(b), torch.from_numpy(lb), num_classes=3, subsets=2)
    assert got[0] == pytest.approx(np_mmd2(a[:4], b[:4]), rel=1e-9) and got[2] == pytest.approx(np_mmd2(a[4:], b[4:]), rel=1e-9)
    assert got[1] is None


def test_class_distances_and_real_top1_equal_a_recomputation(tmp_path: Path):
    """2 synthesized images per class, 4 real ones: 2 real held out, the other 2 the rest both are compared with.

    Which 2 are held out is seeded-random: of the 6 possible splits of each class, exactly one must
    reproduce both KIDs of the report (set vs rest, held-out vs rest), and then both FDs and the
    classifier's top-1 on the held-out images must follow from that split.
    """
    h5 = write_synth_h5(tmp_path / "s.h5", classes=4, per_class=2, seed=5)
    real = write_image_folder(tmp_path / "real", classes=4, per_class=4, seed=6)
    m = tiny(3)
    report = evaluate(h5, [m], reference=real, kid_subsets=3)
    c = report.class_distances
    assert c is not None and c.images == [2, 2, 2, 2] and c.network == report.feature_network
    import h5py

    with h5py.File(h5) as f:
        x, y = f["images"][:], f["labels"][:]
    rx, ry = read_folder(real)
    fx, fr = manual_features(m, x), manual_features(m, rx)
    real_pred = manual_logits(m, rx).argmax(1).numpy()
    correct = 0
    for k in range(4):
        rows = np.flatnonzero(ry == k)
        splits = [(list(h), [r for r in rows if r not in h]) for h in itertools.combinations(rows, 2)]
        match = [
            (h, r) for h, r in splits
            if np_mmd2(fr[h], fr[r]) == pytest.approx(c.kid_real[k], rel=1e-4) and np_mmd2(fx[y == k], fr[r]) == pytest.approx(c.kid[k], rel=1e-4)
        ]
        assert len(match) == 1, k
        held, rest = match[0]
        assert c.frechet[k] == pytest.approx(np_frechet(fx[y == k], fr[rest]), rel=1e-3, abs=1e-6)
        assert c.frechet_real[k] == pytest.approx(np_frechet(fr[held], fr[rest]), rel=1e-3, abs=1e-6)
        hits = int((real_pred[held] == k).sum())
        assert report.accuracy[0].real_per_class[k] == pytest.approx(hits / 2)
        correct += hits
    assert report.accuracy[0].real_top1 == pytest.approx(correct / 8)
    assert c.mean_kid == pytest.approx(np.mean(c.kid)) and c.mean_kid_real == pytest.approx(np.mean(c.kid_real))
    assert c.mean_frechet_real == pytest.approx(np.mean(c.frechet_real))


def test_the_floor_uses_at_most_half_the_reference_and_a_subset_of_a_larger_set(tmp_path: Path):
    h5 = write_synth_h5(tmp_path / "s.h5", classes=2, per_class=9)
    real = write_image_folder(tmp_path / "real", classes=2, per_class=7)
    report = evaluate(h5, [tiny()], reference=real, kid_subsets=2)
    assert report.class_distances is not None and report.class_distances.images == [3, 3]  # 7 // 2 real images held out, 3 of the 9 compared
    assert all(v is not None for v in report.class_distances.kid)
    assert evaluate(h5, [tiny()]).class_distances is None  # no reference, no floor


def test_cli_shows_every_figure_with_its_floor(tmp_path: Path):
    from sowmeta.cli.main import main

    h5 = write_synth_h5(tmp_path / "s.h5", classes=4, per_class=4, size=32)
    real = write_image_folder(tmp_path / "real", classes=4, per_class=8, size=32)
    args = ["evaluate", "--data", str(h5), "--model", "demo-cnn", "--weights", "none", "--reference", str(real), "--workers", "0", "--kid-subsets", "3"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "on as many real images" in r.output and "KID real" in r.output and "(real images:" in r.output
    r = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    report = json.loads(r.stdout)
    assert report["class_distances"]["images"] == [4, 4, 4, 4] and report["accuracy"][0]["real_top1"] is not None
