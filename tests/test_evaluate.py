"""sowmeta.evaluate: every score names its network, accuracy agrees with an independent route, FD behaves."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sowmeta.errors import ConfigError, DataError
from sowmeta.evaluate import EvaluationReport, evaluate
from sowmeta.metrics import network_name
from sowmeta.models import LoadedModel, load_model
from sowmeta.preprocess import Preprocessing

from conftest import shared_path, tiny_net, write_image_folder
from synth_files import write_synth_h5


def tiny(seed: int = 0, name: str = "conftest:tiny_net") -> LoadedModel:
    return LoadedModel(tiny_net(4, seed=seed), name, None, 4, None, Preprocessing(crop=12, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))


def manual_logits(model: LoadedModel, images: np.ndarray) -> torch.Tensor:
    """Logits by a plain route: uint8 N x H x W x 3 -> numpy float normalization -> the module."""
    p = model.preprocessing
    x = (images.astype(np.float64) / 255 - np.asarray(p.mean)) / np.asarray(p.std)
    with torch.no_grad():
        return model.module.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)))


def test_accuracy_per_class_and_network_names(tmp_path: Path):
    h5 = write_synth_h5(tmp_path / "s.h5", classes=4, per_class=6)
    a, b = tiny(0), tiny(1, "other")
    real = write_image_folder(tmp_path / "real", classes=4, per_class=5)
    report = evaluate(h5, [a, b], reference=real, batch_size=5, kid_subsets=10)

    import h5py

    with h5py.File(h5) as f:
        images, labels = f["images"][:], torch.from_numpy(f["labels"][:])
    for model, score in zip((a, b), report.accuracy):
        pred = manual_logits(model, images).argmax(1)
        assert score.network == network_name(model)
        assert score.top1 == pytest.approx((pred == labels).double().mean().item(), abs=1e-12)
        for k in range(4):
            assert score.per_class[k] == pytest.approx((pred[labels == k] == k).double().mean().item(), abs=1e-12)
    assert report.classes == ["c0", "c1", "c2", "c3"] and report.counts == [6, 6, 6, 6] and report.images == 24
    assert report.inception_score is not None and report.inception_score.network == network_name(a)
    assert report.inception_score.splits == 10 and report.inception_score.mean >= 1.0
    # without cached Inception-V3 weights the first model computes the features, and every feature score says so
    assert report.feature_network == network_name(a)
    assert report.diversity is not None and report.diversity.network == network_name(a)
    assert report.distances is not None and report.distances.network == network_name(a)
    assert report.distances.reference_images == 20 and report.distances.kid_subset_size == 20
    assert all(v is not None and v > 0 for v in report.diversity.per_class)
    json.dumps(report.to_dict())  # JSON-ready
    assert isinstance(report, EvaluationReport)


def test_frechet_of_a_set_with_itself_is_zero_and_grows_with_a_shift(tmp_path: Path):
    real = write_image_folder(tmp_path / "real", classes=4, per_class=8, size=12)
    shifted = tmp_path / "shifted"
    for p in real.rglob("*.png"):
        target = shifted / p.relative_to(real)
        target.parent.mkdir(parents=True, exist_ok=True)
        arr = np.asarray(Image.open(p)).astype(np.int16)
        Image.fromarray(np.clip(arr + 60, 0, 255).astype(np.uint8)).save(target)
    m = tiny()
    same = evaluate(real, [m], reference=real, kid_subsets=10)
    assert same.distances is not None and same.diversity is not None
    scale = float(np.mean([v for v in same.diversity.per_class if v is not None])) ** 2  # squared feature spread
    assert abs(same.distances.frechet) < 1e-6 * scale
    assert all(v is not None and abs(v) < 1e-6 * scale for v in same.distances.per_class_frechet)
    assert same.diversity.per_class == same.diversity.reference_per_class
    moved = evaluate(shifted, [m], reference=real, kid_subsets=10)
    assert moved.distances is not None
    assert moved.distances.frechet > 0.05 * scale
    assert moved.distances.kid_mean > same.distances.kid_mean


def test_class_filter_restricts_data_and_reference(tmp_path: Path):
    h5 = write_synth_h5(tmp_path / "s.h5", classes=4, per_class=6)
    real = write_image_folder(tmp_path / "real", classes=4, per_class=5)
    report = evaluate(h5, [tiny()], reference=real, classes=["c1", 3], kid_subsets=10)
    assert report.counts == [0, 6, 0, 6] and report.images == 12
    assert report.accuracy[0].per_class[0] is None and report.accuracy[0].per_class[1] is not None
    assert report.distances is not None and report.distances.reference_images == 10
    assert report.distances.per_class_frechet[0] is None and report.distances.per_class_frechet[3] is not None
    with pytest.raises(ConfigError, match="no class 'dog'"):
        evaluate(h5, [tiny()], classes=["dog"])
    with pytest.raises(ConfigError, match="out of range"):
        evaluate(h5, [tiny()], classes=[7])


def test_contact_sheets(tmp_path: Path):
    h5 = write_synth_h5(tmp_path / "s.h5", classes=3, per_class=6, names=["cat", "dog", "sea lion"])
    report = evaluate(h5, [tiny()], sheets=tmp_path / "sheets", sheet_size=4)
    names = [Path(p).name for p in report.sheets]
    assert names == ["000-cat.png", "001-dog.png", "002-sea_lion.png"]
    with Image.open(report.sheets[0]) as img:
        assert img.size == (4 * 14 + 2, 14 + 2)  # 4 images of 12 px in one row, 2 px padding


def test_bad_input(tmp_path: Path):
    h5 = write_synth_h5(tmp_path / "s.h5", classes=4, per_class=2)
    with pytest.raises(DataError, match="does not exist"):
        evaluate(tmp_path / "missing.h5", [tiny()])
    with pytest.raises(ConfigError, match="no feature model"):
        evaluate(h5, [])  # Inception-V3 is not cached in the isolated TORCH_HOME
    with pytest.raises(DataError, match="6 classes but"):
        evaluate(write_synth_h5(tmp_path / "six.h5", classes=6, per_class=2), [tiny()])
    with pytest.raises(DataError, match="not a directory"):
        evaluate(h5, [tiny()], reference=h5)


def _plain_accuracy(model: LoadedModel, root: Path) -> float:
    """Top-1 accuracy by another route: PIL decode, numpy normalization, the module called directly."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((root / c).iterdir())]
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f, _ in files])
    labels = torch.tensor([k for _, k in files])
    return (manual_logits(model, images).argmax(1) == labels).double().mean().item()


@pytest.mark.shared
def test_cifar_resnet20_accuracy_on_real_images(cifar_test_subset: Path):
    weights = shared_path("models", "cifar10", "resnet20.safetensors")
    model = load_model("cifar-resnet20", weights=str(weights))
    report = evaluate(cifar_test_subset, [model], batch_size=64)
    expected = _plain_accuracy(model, cifar_test_subset)
    assert report.images == 200
    assert report.accuracy[0].top1 == pytest.approx(expected, abs=1e-12)
    assert 0.65 < report.accuracy[0].top1 < 0.95  # 81.0 % on all 10,000 JPEG test images


@pytest.mark.slow
@pytest.mark.shared
def test_cifar_resnet20_full_jpeg_test_set(tmp_path: Path):
    """The measured 81.0 % of ../shared/README.md on the 10,000 JPEG test images."""
    z = shared_path("data", "cifar10", "test.zip")
    with zipfile.ZipFile(z) as zf:
        zf.extractall(tmp_path)
    model = load_model("cifar-resnet20", weights=str(shared_path("models", "cifar10", "resnet20.safetensors")))
    report = evaluate(tmp_path / "test", [model], workers=2)
    assert report.images == 10000
    assert report.accuracy[0].top1 == pytest.approx(0.810, abs=0.0015)


@pytest.mark.shared
@pytest.mark.parametrize(("depth", "known"), [(20, 0.917), (56, 0.933)])
def test_known_accuracy_on_the_lossless_test_images(tmp_path: Path, depth: int, known: float):
    """../shared/README.md measures 91.7 % / 93.3 % on the first 846 original test images; PNGs keep them exact."""
    from sowmeta.models import CIFAR10_LABELS

    data = np.load(shared_path("data", "cifar10", "test-lossless-head.npz"))
    x, y = data["x"], data["y"]
    for i, (img, label) in enumerate(zip(x, y)):
        folder = tmp_path / "test" / CIFAR10_LABELS[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")
    model = load_model(f"cifar-resnet{depth}", weights=str(shared_path("models", "cifar10", f"resnet{depth}.safetensors")))
    report = evaluate(tmp_path / "test", [model], batch_size=128)
    assert report.images == 846
    assert report.accuracy[0].top1 == pytest.approx(known, abs=6e-4)  # the README rounds to 0.1 %: one image either way fails
