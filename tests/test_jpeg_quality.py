"""JPEG compression read from real files written by Pillow at known settings, and the note collect gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import loaded_tiny, write_image_folder
from sowmeta.collectors import collect, collect_seeds
from sowmeta.data.jpeg_quality import compression_note, jpeg_info


def _jpeg(path: Path, quality: int, subsampling: int, side: int = 32) -> Path:
    pixels = np.random.default_rng(quality).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=quality, subsampling=subsampling)
    return path


@pytest.mark.parametrize("quality", [5, 30, 50, 75, 90, 95, 100])
@pytest.mark.parametrize("subsampling, name", [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")])
def test_quality_and_chroma_are_read_back(tmp_path: Path, quality: int, subsampling: int, name: str):
    info = jpeg_info(_jpeg(tmp_path / "x.jpg", quality, subsampling))
    assert info is not None and (info.quality, info.subsampling, info.width, info.height) == (quality, name, 32, 32)


def test_a_header_is_read_once_per_file_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """collect's note and its manifest record both ask for the sampled headers; the file is opened once,
    and again only when it changes."""
    import os

    from PIL import Image as PILImage

    opened: list[str] = []
    real_open = PILImage.open
    monkeypatch.setattr(PILImage, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    path = _jpeg(tmp_path / "x.jpg", 75, 2)
    assert jpeg_info(path) == jpeg_info(str(path)) and jpeg_info(path).quality == 75  # type: ignore[union-attr]
    assert opened == [str(path)]
    before = path.stat().st_mtime_ns
    _jpeg(path, 40, 0)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a coarse clock must still see the rewrite
    info = jpeg_info(path)
    assert info is not None and (info.quality, info.subsampling) == (40, "4:4:4") and len(opened) == 2


def test_other_formats_and_broken_files_have_no_jpeg_info(tmp_path: Path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff not really")
    assert jpeg_info(tmp_path / "a.png") is None and jpeg_info(tmp_path / "b.jpg") is None
    assert compression_note([tmp_path / "a.png", tmp_path / "b.jpg"]) is None


def test_the_note_names_heavy_compression_only(tmp_path: Path):
    cifar_like = _jpeg(tmp_path / "q75.jpg", 75, 2)
    note = compression_note([_jpeg(tmp_path / "q98.jpg", 98, 0), cifar_like])
    assert note is not None and "quality about 75 with 4:2:0" in note and str(cifar_like) in note
    assert compression_note([_jpeg(tmp_path / "small-420.jpg", 98, 2)]) is not None  # halved chroma of a 32 px image
    assert compression_note([tmp_path / "q98.jpg"]) is None
    assert compression_note([_jpeg(tmp_path / "big.jpg", 75, 2, side=128)]) is None  # a photograph's usual compression
    assert compression_note([_jpeg(tmp_path / "big-low.jpg", 60, 2, side=128)]) is not None
    mixed = compression_note([tmp_path / "big.jpg", tmp_path / "small-420.jpg"])  # the least quality is not what shows
    assert mixed is not None and "small-420.jpg" in mixed and "quality about 98 with 4:2:0" in mixed


def test_collect_passes_the_note_on(tmp_path: Path):
    notes: list[str] = []
    jpegs = write_image_folder(tmp_path / "jpegs", classes=2, per_class=2, fmt="jpg")  # Pillow's default: quality 75, 4:2:0
    collect(loaded_tiny(), jpegs, notice=notes.append)
    assert len(notes) == 1 and "quality about 75" in notes[0]
    collect_seeds(loaded_tiny(), jpegs, keep_rejected=True, notice=notes.append)
    assert len(notes) == 2 and "quality about 75" in notes[1]
    collect(loaded_tiny(), write_image_folder(tmp_path / "pngs", classes=2, per_class=2), notice=notes.append)
    assert len(notes) == 2


def test_the_shared_cifar_copy_and_its_lossless_head(tmp_path: Path, cifar_test_subset: Path):
    """../shared's JPEGs read as quality 75, 4:2:0; studies/lossless_seeds.py rebuilds them from the lossless head."""
    import subprocess
    import sys

    from conftest import shared_path

    npz = shared_path("data", "cifar10", "test-lossless-head.npz")
    shipped = sorted((cifar_test_subset / "cat").iterdir())[:3]
    info = jpeg_info(shipped[0])
    assert info is not None and (info.quality, info.subsampling) == (75, "4:2:0") and compression_note(shipped)
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "studies/lossless_seeds.py", "--out", str(tmp_path), "--npz", str(npz)], cwd=root, check=True)
    arrays = np.load(npz)
    cats = arrays["x"][arrays["y"] == 3]
    assert len(list((tmp_path / "seeds-lossless" / "cat").iterdir())) == len(cats)
    for k, path in enumerate(shipped):
        lossless = np.asarray(Image.open(tmp_path / "seeds-lossless" / "cat" / f"{k:04d}.png")).transpose(2, 0, 1)
        assert np.array_equal(lossless, cats[k])
        ours = np.asarray(Image.open(tmp_path / "seeds-jpeg" / "cat" / f"{k:04d}.jpg"), dtype=np.float64)
        assert np.abs(ours - np.asarray(Image.open(path), dtype=np.float64)).mean() < 2.0  # the same encoding, up to libjpeg builds
    halves = [sorted(p.name for p in (tmp_path / tree / "cat").iterdir()) for tree in ("seeds-lossless-half", "ref-lossless")]
    assert not set(halves[0]) & set(halves[1]) and len(halves[0]) + len(halves[1]) == len(cats)


def test_evaluate_notes_a_compressed_reference(tmp_path: Path):
    from sowmeta.evaluation import evaluate

    model = loaded_tiny()
    data = write_image_folder(tmp_path / "data", classes=2, per_class=6)
    jpeg_reference = write_image_folder(tmp_path / "jpegs", classes=2, per_class=6, seed=1, fmt="jpg")
    report = evaluate(data, [model], reference=jpeg_reference, feature_model=model, kid_subsets=2)
    assert len(report.notes) == 1 and "reference images are 12x12 px JPEGs of quality about 75" in report.notes[0]
    assert report.to_dict()["notes"] == report.notes
    lossless_reference = write_image_folder(tmp_path / "pngs", classes=2, per_class=6, seed=1)
    assert evaluate(data, [model], reference=lossless_reference, feature_model=model, kid_subsets=2).notes == []


def test_a_jpeg_without_a_luminance_table_of_64_is_not_judged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from PIL import JpegImagePlugin

    path = _jpeg(tmp_path / "x.jpg", 75, 2)
    real = JpegImagePlugin.JpegImageFile._open

    def odd_tables(self):  # noqa: ANN001, ANN202
        real(self)
        self.quantization = {1: self.quantization[1]}

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "_open", odd_tables)
    assert jpeg_info(path) is None and compression_note([path]) is None


def _folder(root: Path, settings: list[tuple[str, int, int] | None], per_class: int = 2, side: int = 12) -> Path:
    """One class per setting: (quality, Pillow subsampling) JPEGs, or PNGs for None."""
    rng = np.random.default_rng(0)
    for k, setting in enumerate(settings):
        d = root / f"{k}_c{k}"
        d.mkdir(parents=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
            if setting is None:
                image.save(d / f"{i}.png")
            else:
                image.save(d / f"{i}.jpg", "JPEG", quality=setting[0], subsampling=setting[1])
    return root


def test_bundles_record_how_their_images_were_stored(tmp_path: Path):
    """format 1.2's source.compression: the most compressed JPEG among the sampled files, as Pillow wrote it."""
    import json

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from sowmeta.bundle import Bundle
    from sowmeta.collectors import TrainingCollector

    model = loaded_tiny()
    data = _folder(tmp_path / "mixed", [(90, 0), (40, 2), None])
    collect(model, data, out=tmp_path / "b")
    written = json.loads((tmp_path / "b" / "sowmeta.json").read_text())
    assert written["format_version"] == "1.5"
    assert written["source"]["compression"] == {
        "files_sampled": 3, "jpeg_files": 2, "quality": 40, "subsampling": "4:2:0", "width": 12, "height": 12
    }
    assert Bundle.load(tmp_path / "b").manifest.source.compression == written["source"]["compression"]
    seeds = collect_seeds(model, _folder(tmp_path / "seeds", [(85, 1), None, None]), keep_rejected=True)[0]
    assert seeds.manifest.source.compression == {
        "files_sampled": 3, "jpeg_files": 1, "quality": 85, "subsampling": "4:2:2", "width": 12, "height": 12
    }
    lossless = collect(model, _folder(tmp_path / "pngs", [None, None]))[0].manifest.source.compression
    assert lossless == {"files_sampled": 2, "jpeg_files": 0, "quality": None, "subsampling": None, "width": None, "height": None}
    loader = DataLoader(TensorDataset(torch.rand(4, 3, 12, 12), torch.tensor([0, 1, 0, 1])), batch_size=2)
    assert collect(model, loader)[0].manifest.source.compression is None  # no files seen: not recorded
    tc = TrainingCollector(model.module, num_classes=4)
    with tc.observe(torch.tensor([0, 1])):
        model.module(torch.rand(2, 3, 12, 12))
    assert tc.to_bundle(architecture="tiny", preprocessing=model.preprocessing).manifest.source.compression is None


def test_a_manifest_with_impossible_compression_is_refused(tmp_path: Path):
    import json

    from sowmeta.errors import SchemaError
    from sowmeta.bundle.manifest import Manifest

    collect(loaded_tiny(), _folder(tmp_path / "d", [(75, 2), (75, 2)]), out=tmp_path / "b")
    good = json.loads((tmp_path / "b" / "sowmeta.json").read_text())
    for change, expect in (({"quality": 0}, "source/compression/quality"), ({"subsampling": "4:1:1"}, "source/compression/subsampling"),
                           ({"jpeg_files": 3}, "3 JPEGs of 2 sampled files"), ({"quality": None}, "with quality None")):
        bad = json.loads(json.dumps(good))
        bad["source"]["compression"].update(change)
        with pytest.raises(SchemaError, match=expect):
            Manifest.from_dict(bad)
    assert Manifest.from_dict(good).source.compression["quality"] == 75


def test_inspect_synthesize_and_the_card_tell_how_the_images_were_stored(tmp_path: Path):
    from click.testing import CliRunner

    from sowmeta.cli.main import main
    from sowmeta.registry.card import render_card

    tiny = ["--model", "conftest:tiny_net", "--weights", "none"]
    runner = CliRunner()
    for name, settings in (("jpeg", [(75, 2)] * 3), ("png", [None] * 3)):
        r = runner.invoke(main, ["collect", *tiny, "--crop", "12", "--workers", "0", "--data", str(_folder(tmp_path / name, settings)),
                                 "--out", str(tmp_path / f"b-{name}")])
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["inspect", str(tmp_path / "b-jpeg")])
    assert "source images: JPEG, quality about 75 with 4:2:0 chroma at 12x12 px (the most compressed of 3 JPEGs among 3 sampled files)" in " ".join(r.output.split())
    assert "source images: no JPEG among 3 sampled files" in runner.invoke(main, ["inspect", str(tmp_path / "b-png")]).output
    assert "- **Source images**: JPEG, quality about 75" in render_card(tmp_path / "b-jpeg", "me/tiny-cc")
    assert "compressed enough that synthesized images carry the compression" in render_card(tmp_path / "b-jpeg", "me/tiny-cc")
    assert "carry the compression" not in render_card(tmp_path / "b-png", "me/tiny-cc")

    runs: list[str] = []

    def synth(bundle: str, *extra: str) -> str:
        runs.append(bundle)
        r = runner.invoke(main, ["synthesize", "--bundle", str(tmp_path / bundle), *tiny, "--iterations", "1", "--per-class", "1", "--classes", "0",
                                 "--out", str(tmp_path / f"s{len(runs)}.h5"), "--allow-low-confidence", *extra])
        assert r.exit_code == 0, r.output
        return " ".join(r.output.split())

    assert "note: the bundle's statistics come from 12x12 px JPEGs of quality about 75 with 4:2:0 chroma" in synth("b-jpeg")
    assert "note" not in synth("b-png")
    assert "note" not in synth("b-jpeg", "--jpeg-quality", "75")
    assert "note: --jpeg-quality 90, but the bundle's statistics come from JPEGs of quality about 75" in synth("b-jpeg", "--jpeg-quality", "90")


def test_the_library_gives_the_synthesize_note_too(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """``synthesize()`` passes the note to ``notice``, logs it without one, and has none for mode global."""
    from sowmeta.synth import SynthConfig, synthesize

    model = loaded_tiny()
    collect(model, _folder(tmp_path / "d", [(75, 2)] * 3), out=tmp_path / "b")
    cfg = SynthConfig.cifar(iterations=1, batch_size=1)
    heard: list[str] = []
    synthesize(tmp_path / "b", model, classes=[0], per_class=1, config=cfg, notice=heard.append)
    assert len(heard) == 1 and "12x12 px JPEGs of quality about 75 with 4:2:0 chroma" in heard[0]
    with caplog.at_level("WARNING", logger="sowmeta.synth.pipeline"):
        synthesize(tmp_path / "b", model, classes=[0], per_class=1, config=cfg)
    assert [r.getMessage() for r in caplog.records if r.name == "sowmeta.synth.pipeline"] == heard
    synthesize(tmp_path / "b", model, classes=[0], per_class=1, config=cfg.replace(mode="global"), notice=heard.append)
    synthesize(tmp_path / "b", model, classes=[0], per_class=1, config=cfg.replace(jpeg_quality=75), notice=heard.append)
    assert len(heard) == 1
