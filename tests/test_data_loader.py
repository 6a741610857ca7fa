"""The collection loader: the same pixels as ``Preprocessing.transform()`` at a fraction of the cost, and its sizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sowmeta.data.folders import DecodedImages, NormalizeBatch, decode_file, folder_loader, plan_loader, read_image, scan_image_folder
from sowmeta.models.preprocess import Preprocessing

from conftest import write_image_folder


def _mixed_folder(root: Path) -> Path:
    """JPEG and PNG files, grey and CMYK JPEGs, and images of other sizes than the crop."""
    write_image_folder(root, classes=2, per_class=3, size=12, fmt="jpg")
    write_image_folder(root, classes=2, per_class=2, size=12, seed=1, fmt="png")
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (17, 23), dtype=np.uint8), "L").save(root / "0_c0" / "grey.jpg")
    Image.fromarray(rng.integers(0, 255, (9, 14, 4), dtype=np.uint8), "CMYK").save(root / "1_c1" / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 255, (30, 21, 3), dtype=np.uint8)).save(root / "1_c1" / "tall.jpg", quality=60)
    return root


@pytest.mark.parametrize(
    "prep",
    [Preprocessing(crop=12), Preprocessing(crop=10, resize=14), Preprocessing(crop=8, resize=11, interpolation="bicubic"),
     Preprocessing(crop=16, resize=16, interpolation="lanczos", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))],
)
def test_batches_equal_the_per_image_transform_bit_for_bit(tmp_path: Path, prep: Preprocessing):
    samples = scan_image_folder(_mixed_folder(tmp_path / "data")).samples
    ds = DecodedImages(samples, prep)
    images, labels, bad = NormalizeBatch(prep.mean, prep.std)([ds[i] for i in range(len(ds))])
    expected = torch.stack([prep.transform()(read_image(p)) for p, _ in samples])
    assert bad == [] and labels.tolist() == [y for _, y in samples]
    assert images.dtype == torch.float32 and torch.equal(images, expected)


def test_jpeg_decoding_equals_pil(tmp_path: Path):
    root = _mixed_folder(tmp_path / "data")
    for path in sorted(root.rglob("*.jpg")):
        pil = torch.from_numpy(np.asarray(read_image(path)).copy()).permute(2, 0, 1)
        assert torch.equal(decode_file(path), pil), path


def test_undecodable_files_are_reported_not_raised(tmp_path: Path):
    root = write_image_folder(tmp_path / "data", classes=1, per_class=3, size=12, fmt="jpg")
    good = root / "0_c0" / "img000.jpg"
    (root / "0_c0" / "img001.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # truncated JPEG
    (root / "0_c0" / "img002.jpg").write_bytes(b"not an image")
    samples = scan_image_folder(root).samples
    plan = plan_loader(12, "cpu", batch_size=8, workers=0)
    (images, labels, bad), = list(folder_loader(samples, Preprocessing(crop=12), plan))
    assert bad == [1, 2] and images.shape == (1, 3, 12, 12) and labels.tolist() == [0]


def test_plan_fits_the_machine():
    small = plan_loader(32, "cpu", cores=2)
    assert small.workers == 0 and small.batch_size == 256 and not small.pin_memory
    assert plan_loader(224, "cpu", cores=2).batch_size == 32
    assert plan_loader(224, "cpu", cores=16).workers == 2
    gpu = plan_loader(224, "cuda", cores=16)
    assert gpu.workers == 8 and gpu.pin_memory and gpu.batch_size == 256
    assert plan_loader(32, "cuda", cores=4).batch_size == 1024 and plan_loader(32, "cuda", cores=4).workers == 3
    given = plan_loader(32, "cpu", batch_size=5, workers=3, cores=2)
    assert (given.batch_size, given.workers) == (5, 3)


@pytest.mark.parametrize("prep", [Preprocessing(crop=12), Preprocessing(crop=10, resize=14, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))])
def test_decoding_in_the_main_process_matches_the_workers(tmp_path: Path, prep: Preprocessing):
    """The GPU route (run here on the CPU): exact without resizing; within two levels of PIL's resize with it."""
    from sowmeta.data.folders import DecodeOnDevice, LoaderPlan

    root = _mixed_folder(tmp_path / "data")
    (root / "0_c0" / "img001.jpg").write_bytes((root / "0_c0" / "img000.jpg").read_bytes()[:300])  # truncated
    samples = scan_image_folder(root).samples
    plan = LoaderPlan(batch_size=64, workers=0, pin_memory=False, decode_device="cpu")
    loader = folder_loader(samples, prep, plan)
    assert isinstance(loader, DecodeOnDevice)
    (images, labels, bad), = list(loader)
    reference, ref_labels, ref_bad = NormalizeBatch(prep.mean, prep.std)([DecodedImages(samples, prep)[i] for i in range(len(samples))])
    truncated = [i for i, (path, _) in enumerate(samples) if path.name == "img001.jpg" and path.parent.name == "0_c0"]
    assert bad == ref_bad == truncated and labels.tolist() == ref_labels.tolist()
    if prep.resize is None:
        assert torch.equal(images, reference)
    else:
        levels = ((images - reference) * torch.tensor(prep.std).view(1, 3, 1, 1) * 255).abs()
        assert float(levels.max()) <= 2.01 and float(levels.mean()) < 0.3


def test_folder_loader_with_a_worker_gives_the_transforms_tensors(tmp_path: Path):
    """The loader as collect runs it (a decoding process, batches of 4): the same tensors as ``Preprocessing.transform()``, in order."""
    prep = Preprocessing(crop=10, resize=14)
    samples = scan_image_folder(_mixed_folder(tmp_path / "data")).samples
    plan = plan_loader(prep.crop, "cpu", batch_size=4, workers=1)
    batches = list(folder_loader(samples, prep, plan))
    assert [len(y) for _, y, _ in batches] == [4, 4, 4, 1] and all(bad == [] for _, _, bad in batches)
    expected = torch.stack([prep.transform()(read_image(p)) for p, _ in samples])
    assert torch.equal(torch.cat([x for x, _, _ in batches]), expected)
    assert torch.cat([y for _, y, _ in batches]).tolist() == [y for _, y in samples]


def test_folder_scan_finds_what_rglob_finds_in_the_same_order(tmp_path):
    """Nested folders, names that sort differently as strings and as path parts, upper-case and hidden
    files, symbolic links to a file, to a folder (not followed) and to nothing: the scan lists exactly
    ``sorted(p for p in rglob('*') if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)``, less hidden files and folders."""
    import os

    from sowmeta.data.folders import IMAGE_EXTENSIONS, scan_image_folder

    cls = tmp_path / "root" / "cat"
    for rel in ("a/b.png", "a-c.png", "a.png", "B.JPG", ".hidden.jpg", "x/y/z.jpeg", "notes.txt", "x/y/w.gif", "a0/.jpg"):
        (cls / rel).parent.mkdir(parents=True, exist_ok=True)
        (cls / rel).write_bytes(b"x")
    os.symlink(cls / "a.png", cls / "link.png")
    os.symlink(cls / "x", cls / "dirlink")
    os.symlink(cls / "missing.png", cls / "broken.png")
    index = scan_image_folder(tmp_path / "root")
    want = sorted(p for p in cls.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(cls).parts))
    assert len(want) == 7  # the two hidden images (.hidden.jpg, a0/.jpg) are left out
    assert [p for p, _ in index.samples] == want
    names = [p.relative_to(cls).as_posix() for p in want]
    assert names.index("a/b.png") < names.index("a-c.png")  # parts order, not string order ('-' < '/')
    assert "dirlink/y/z.jpeg" not in names and "link.png" in names and "broken.png" not in names
    for n in (1, 3, 100):  # a limit keeps the first n of that order, as .limit() does
        limited = scan_image_folder(tmp_path / "root", limit_per_class=n)
        assert [p for p, _ in limited.samples] == want[:n] and limited.per_class == [min(n, len(want))]
        assert limited.samples == index.limit(n).samples


def test_folder_scan_limit_below_one_is_refused(tmp_path):
    from sowmeta.data.folders import scan_image_folder
    from sowmeta.errors import DataError

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"x")
    with pytest.raises(DataError, match="at least 1"):
        scan_image_folder(tmp_path, limit_per_class=0)
