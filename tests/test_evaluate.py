"""sowmeta.evaluation: every score names its network, accuracy agrees with an independent route, FD behaves."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sowmeta.errors import ConfigError, DataError
from sowmeta.evaluation import EvaluationReport, evaluate
from sowmeta.evaluation.metrics import (
    class_diversity,
    frechet_distance,
    inception_score,
    inception_splits,
    kernel_distance,
    network_name,
    per_class_frechet,
)
from sowmeta.models import LoadedModel, load_model
from sowmeta.models.preprocess import Preprocessing

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
    assert report.inception_score.splits == 8 and report.inception_score.mean >= 1.0  # 10 asked: 24 images make 8 chunks of 3
    # without cached Inception-V3 weights the first model computes the features, and every feature score says so
    assert report.feature_network == network_name(a)
    assert report.diversity is not None and report.diversity.network == network_name(a)
    assert report.distances is not None and report.distances.network == network_name(a)
    assert report.distances.reference_images == 20 and report.distances.kid_subset_size == 20
    assert all(v is not None and v > 0 for v in report.diversity.per_class)
    json.dumps(report.to_dict())  # JSON-ready
    assert isinstance(report, EvaluationReport)


# --- the scores against independent float64 numpy computations ---------------------------


def np_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x^1/2 S_y S_x^1/2)^1/2), square roots by symmetric eigendecomposition."""

    def psd_sqrt(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    r = psd_sqrt(sx)
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * np.trace(psd_sqrt(r @ sy @ r)))


def np_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit loops over pairs."""
    k = lambda a, b: (a @ b / x.shape[1] + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return float(xx + yy - 2 * xy)


def np_diversity(x: np.ndarray) -> float:
    """Mean Euclidean distance over ordered pairs of different rows."""
    n = len(x)
    return float(np.mean([np.linalg.norm(x[i] - x[j]) for i in range(n) for j in range(n) if i != j]))


def np_inception_score(logits: np.ndarray) -> float:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(p.mean(0)))).sum(1).mean()))


def test_metrics_equal_float64_numpy_computations():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(30, 5)) @ rng.normal(size=(5, 5)) + 2.0
    b = rng.normal(0.5, 1.5, size=(30, 5)) @ rng.normal(size=(5, 5))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert frechet_distance(ta, tb) == pytest.approx(np_frechet(a, b), rel=1e-9)
    assert frechet_distance(ta, ta) == pytest.approx(0.0, abs=1e-9)
    # a KID subset as large as both sets holds every image: the mean over subsets is the full-set MMD^2
    mean, std, size = kernel_distance(ta, tb, subsets=3, subset_size=30)
    assert size == 30 and mean == pytest.approx(np_mmd2(a, b), rel=1e-9) and std == pytest.approx(0.0, abs=1e-9 * abs(mean))
    assert kernel_distance(ta, tb[:12], subsets=2)[2] == 12  # subset size lowered to the smaller set
    labels = np.repeat(np.arange(3), 10)
    div = class_diversity(ta, torch.from_numpy(labels), num_classes=4)
    assert div[:3] == pytest.approx([np_diversity(a[labels == k]) for k in range(3)], rel=1e-9) and div[3] is None
    per = per_class_frechet(ta, torch.from_numpy(labels), tb, torch.from_numpy(labels), num_classes=4)
    assert per[:3] == pytest.approx([np_frechet(a[labels == k], b[labels == k]) for k in range(3)], rel=1e-6) and per[3] is None
    logits = rng.normal(size=(40, 6)) * 3
    score, none = inception_score(torch.from_numpy(logits), splits=1)
    assert score == pytest.approx(np_inception_score(logits), rel=1e-12) and none is None
    assert inception_score(torch.from_numpy(logits), splits=4)[1] is not None


def test_inception_splits_counts_the_chunks_torch_makes():
    for n in range(1, 60):
        for s in range(1, n + 1):
            assert inception_splits(n, s) == len(torch.arange(n).chunk(s))
    with pytest.raises(ConfigError):
        inception_splits(0, 10)


def manual_features(model: LoadedModel, images: np.ndarray) -> np.ndarray:
    """TinyNet's penultimate features (the input of ``fc``) by calling its layers one by one."""
    p = model.preprocessing
    x = (images.astype(np.float64) / 255 - np.asarray(p.mean)) / np.asarray(p.std)
    m = model.module.eval()
    with torch.no_grad():
        h = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))
        h = torch.relu(m.bn1(m.conv1(h)))
        h = torch.relu(m.bn2(m.conv2(h)))
        h = torch.relu(m.conv3(h))
        return h.mean(dim=(2, 3)).double().numpy()


def read_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((root / c).iterdir())]
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f, _ in files]), np.array([k for _, k in files])


def test_evaluate_feature_scores_equal_independent_computations(tmp_path: Path):
    """FD, KID, per-class FD and diversity of a report, recomputed from the model's penultimate features by hand."""
    import h5py

    h5 = write_synth_h5(tmp_path / "s.h5", classes=4, per_class=5)
    real = write_image_folder(tmp_path / "real", classes=4, per_class=5, seed=3)
    m = tiny(2)
    report = evaluate(h5, [m], reference=real, kid_subsets=2)
    with h5py.File(h5) as f:
        x, y = f["images"][:], f["labels"][:]
    rx, ry = read_folder(real)
    fx, fr = manual_features(m, x), manual_features(m, rx)
    d = report.distances
    assert d is not None and report.diversity is not None
    assert d.frechet == pytest.approx(np_frechet(fr, fx), rel=1e-4)
    assert d.kid_subset_size == 20 and d.kid_mean == pytest.approx(np_mmd2(fr, fx), rel=1e-4)
    assert d.per_class_frechet == pytest.approx([np_frechet(fx[y == k], fr[ry == k]) for k in range(4)], rel=1e-4)
    assert report.diversity.per_class == pytest.approx([np_diversity(fx[y == k]) for k in range(4)], rel=1e-5)
    assert report.diversity.reference_per_class == pytest.approx([np_diversity(fr[ry == k]) for k in range(4)], rel=1e-5)
    logits = manual_logits(m, x).double().numpy()
    assert report.inception_score is not None and report.inception_score.splits == 10  # 20 images: 10 chunks of 2
    assert 1.0 <= report.inception_score.mean <= 4.0
    one = evaluate(h5, [m], is_splits=1)
    assert one.inception_score is not None and one.inception_score.mean == pytest.approx(np_inception_score(logits), rel=1e-5)


@pytest.mark.slow
def test_cached_inception_v3_computes_the_feature_scores(tmp_path: Path):
    """With Inception-V3 weights in the torch hub cache (here: random ones, planted; nothing downloads), it is the feature network."""
    from torchvision.models import Inception_V3_Weights, inception_v3

    from sowmeta.evaluation.metrics import inception_weights_cached

    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(Inception_V3_Weights.IMAGENET1K_V1.url).name
    assert not inception_weights_cached()
    cached.parent.mkdir(parents=True)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), cached)
    assert inception_weights_cached()
    h5 = write_synth_h5(tmp_path / "s.h5", classes=2, per_class=2, size=32)
    real = write_image_folder(tmp_path / "real", classes=2, per_class=2, size=32)
    m = tiny()
    report = evaluate(h5, [m], reference=real, kid_subsets=2, batch_size=4)
    assert report.feature_network == "inception_v3 (IMAGENET1K_V1)"
    assert report.distances is not None and report.distances.network == "inception_v3 (IMAGENET1K_V1)"
    assert report.diversity is not None and report.diversity.network == "inception_v3 (IMAGENET1K_V1)"
    assert report.inception_score is not None and report.inception_score.network == network_name(m)
    assert report.accuracy[0].network == network_name(m) and report.distances.frechet > 0


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
    with pytest.raises(ConfigError, match="class 'dog' is neither a class index nor a label"):
        evaluate(h5, [tiny()], classes=["dog"])
    with pytest.raises(ConfigError, match="class 7 does not exist"):
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


def test_class_folders_are_matched_to_the_models_labels_by_name(tmp_path: Path):
    """A folder with only cat/ and dog/ is scored as cat and dog, wherever they sort, in evaluate and its reference."""
    model = tiny()
    model.labels = ["plane", "car", "cat", "dog"]
    rng = np.random.default_rng(0)
    for root in (tmp_path / "data", tmp_path / "real"):
        for name in ("dog", "cat"):
            (root / name).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    report = evaluate(tmp_path / "data", [model], reference=tmp_path / "real", batch_size=3, kid_subsets=5)
    assert report.classes == ["plane", "car", "cat", "dog"] and report.counts == [0, 0, 4, 4]
    images = np.stack([np.asarray(Image.open(tmp_path / "data" / n / f"{i}.png")) for n in ("cat", "dog") for i in range(4)])
    pred = manual_logits(model, images).argmax(1)
    truth = torch.tensor([2] * 4 + [3] * 4)
    assert report.accuracy[0].top1 == pytest.approx((pred == truth).double().mean().item(), abs=1e-12)
    assert report.accuracy[0].per_class[3] == pytest.approx((pred[4:] == 3).double().mean().item(), abs=1e-12)


def test_each_folder_is_scanned_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two networks, a folder of images and a reference folder: two directory scans, not one per network and stage."""
    import sowmeta.data.image_sets as synthdata

    scanned: list[str] = []
    real_scan = synthdata.scan_image_folder

    def counting(root, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        scanned.append(Path(root).name)
        return real_scan(root, *args, **kwargs)

    monkeypatch.setattr(synthdata, "scan_image_folder", counting)
    data = write_image_folder(tmp_path / "data", classes=4, per_class=4)
    real = write_image_folder(tmp_path / "real", classes=4, per_class=6, seed=1)
    report = evaluate(data, [tiny(0), tiny(1, "other")], reference=real, kid_subsets=2)
    assert sorted(scanned) == ["data", "real"]
    assert report.images == 16 and report.accuracy[1].real_top1 is not None


def _np_naturalness(images: np.ndarray) -> tuple[float, float]:
    """Mean high-frequency fraction (luma power above 0.125 cycles/px, mean removed) and TV per pixel, N x H x W x 3 uint8, in numpy float64."""
    x = images.astype(np.float64) / 255
    luma = x @ np.array([0.299, 0.587, 0.114])
    luma -= luma.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(luma)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(x.shape[1]), np.fft.fftfreq(x.shape[2]), indexing="ij")
    high = np.hypot(fy, fx) > 0.125
    hf = (power * high).sum(axis=(1, 2)) / power.sum(axis=(1, 2))
    tv = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3)) + np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3))
    return float(hf.mean()), float(tv.mean())


def test_evaluate_reports_naturalness_against_the_reference(tmp_path: Path):
    """With real images, the report holds the set's and the reference's naturalness (of the evaluated classes) and their ratios."""
    import h5py

    h5 = write_synth_h5(tmp_path / "s.h5", classes=4, per_class=5)
    real = write_image_folder(tmp_path / "real", classes=4, per_class=5, seed=3)
    report = evaluate(h5, [tiny(2)], reference=real, kid_subsets=2, classes=[0, 2, 3])
    with h5py.File(h5) as f:
        x, y = f["images"][:], f["labels"][:]
    rx, ry = read_folder(real)
    n = report.naturalness
    assert n is not None and n.size == 12 and (n.data.images, n.reference.images) == (15, 15)
    keep, rkeep = np.isin(y, [0, 2, 3]), np.isin(ry, [0, 2, 3])
    assert (n.data.hf_fraction, n.data.tv_per_pixel) == pytest.approx(_np_naturalness(x[keep]), rel=1e-9)
    assert (n.reference.hf_fraction, n.reference.tv_per_pixel) == pytest.approx(_np_naturalness(rx[rkeep]), rel=1e-9)
    assert n.hf_ratio == pytest.approx(n.data.hf_fraction / n.reference.hf_fraction)
    assert json.loads(json.dumps(report.to_dict()))["naturalness"]["tv_ratio"] == pytest.approx(n.tv_ratio)
