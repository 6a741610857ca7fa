"""Bad input, tried as a careless or hostile user would (issue 13): every case ends with exit code != 0,
one line without a traceback, no foreign code run, and the user's files exactly as they were."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import loaded_tiny, write_image_folder

from sowmeta import errors as E
from sowmeta.bundle import Bundle
from sowmeta.cli.main import main
from sowmeta.collectors import collect
from sowmeta.models import load_model

TINY = ["--model", "conftest:tiny_net", "--weights", "none", "--crop", "12", "--workers", "0"]
SYNTH = ["--model", "conftest:tiny_net", "--weights", "none", "--iterations", "2", "--per-class", "1", "--batch-size", "1", "-q"]


def cli(*args: str, env: dict[str, str] | None = None):  # noqa: ANN201
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def one_line_failure(r, expect: str) -> None:  # noqa: ANN001
    """Exit code != 0, one line, no traceback, and the expected words in it."""
    text = r.output.strip()
    assert r.exit_code not in (0, None), text
    assert "Traceback" not in text and r.exception is None or isinstance(r.exception, SystemExit), (text, r.exception)
    assert len(text.splitlines()) == 1, text
    assert expect in text, text


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def user_tree(root: Path) -> Path:
    (root / "photos").mkdir(parents=True)
    (root / "thesis.txt").write_text("four years of work\n")
    (root / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad-input")
    data = write_image_folder(root / "data")
    bundle, _ = collect(loaded_tiny(weights="none"), data, batch_size=5)
    return bundle.save(root / "bundle")


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(bundle_dir, tmp_path / "copy"))


def edit_manifest(path: Path, change: Callable[[dict], None]) -> None:
    d = json.loads((path / "sowmeta.json").read_text())
    change(d)
    (path / "sowmeta.json").write_text(json.dumps(d))


def rewrite_tensors(path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Change the stored tensors and re-seal the bundle (file hash in the manifest), as a careless writer would."""
    import hashlib

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    f = path / "stats.safetensors"
    with safe_open(str(f), framework="pt") as h:
        meta = h.metadata()
    tensors = load_file(str(f))
    change(tensors)
    save_file(tensors, str(f), metadata=meta)
    edit_manifest(path, lambda d: d["files"][0].update(sha256=hashlib.sha256(f.read_bytes()).hexdigest(), size=f.stat().st_size))


# --- 1. --overwrite replaces only what sowmeta wrote; outputs are checked before any work ------------


def test_collect_overwrite_refuses_a_users_folder(image_folder: Path, tmp_path: Path):
    mine = user_tree(tmp_path / "mine")
    before = snapshot(mine)
    r = cli("collect", *TINY, "--data", image_folder, "--out", mine, "--overwrite")
    one_line_failure(r, "is not a sowmeta bundle (it holds no sowmeta bundle manifest)")
    assert snapshot(mine) == before


def test_collect_overwrite_refuses_a_bundle_folder_holding_other_files(bundle_copy: Path, image_folder: Path):
    (bundle_copy / "notes.txt").write_text("mine")
    before = snapshot(bundle_copy)
    r = cli("collect", *TINY, "--data", image_folder, "--out", bundle_copy, "--overwrite")
    one_line_failure(r, "also holds 'notes.txt'")
    assert snapshot(bundle_copy) == before


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_collect_out_never_overlaps_the_data(image_folder: Path, where: str):
    out = {"same": image_folder, "inside": image_folder / "0_c0" / "bundle", "contains": image_folder.parent}[where]
    before = snapshot(image_folder)
    r = cli("collect", *TINY, "--data", image_folder, "--out", out, "--overwrite")
    one_line_failure(r, "overlaps --data")
    assert snapshot(image_folder) == before


def test_collect_seeds_out_never_overlaps_the_seeds(image_folder: Path):
    r = cli("collect", *TINY, "--seeds", image_folder, "--out", image_folder / "x")
    one_line_failure(r, "overlaps --seeds")


def test_collect_overwrite_replaces_its_own_bundle(bundle_copy: Path, image_folder: Path):
    r = cli("collect", *TINY, "--data", image_folder, "--out", bundle_copy, "--overwrite", "--batch-size", "7")
    assert r.exit_code == 0, r.output
    assert Bundle.load(bundle_copy).manifest.source.images == 15


def test_synthesize_outputs_are_checked_before_any_work(bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sowmeta.synth.engine as engine

    def never(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("synthesis ran before the outputs were checked")

    monkeypatch.setattr(engine.Inverter, "run", never)
    photos = user_tree(tmp_path / "photos")
    grid = tmp_path / "holiday.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(grid)
    essay = tmp_path / "essay.h5"
    essay.write_bytes(b"my essay, not HDF5")
    before = snapshot(tmp_path)
    base = ["synthesize", "--bundle", bundle_dir, *SYNTH, "--classes", "0"]
    cases = [
        ([*base, "--out", tmp_path / "s.h5", "--png", photos, "--overwrite"], "--png"),
        ([*base, "--out", tmp_path / "s.h5", "--grid", grid], "--grid"),
        ([*base, "--out", tmp_path / "s.h5", "--grid", grid, "--overwrite"], "is not a PNG sowmeta wrote"),
        ([*base, "--out", essay, "--overwrite"], "is not a sowmeta synthesis file"),
        ([*base, "--out", photos / "thesis.txt" / "s.h5"], "is a file, not a directory"),
        ([*base, "--out", tmp_path / "s.h5", "--png", tmp_path / "s.h5"], "collides with --out"),
        ([*base, "--out", bundle_dir / "s.h5"], "overlaps the bundle"),
    ]
    for args, expect in cases:
        one_line_failure(cli(*args), expect)
    assert snapshot(tmp_path) == before


def test_unwritable_destinations_fail_before_work(bundle_dir: Path, image_folder: Path, tmp_path: Path):
    if os.geteuid() == 0:
        locked = tmp_path / "plainfile"  # root can write anywhere: use a path under a file instead
        locked.write_text("x")
        target = locked / "sub"
        expect = "is a file, not a directory"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "sub"
        expect = "no write permission"
    one_line_failure(cli("synthesize", "--bundle", bundle_dir, *SYNTH, "--out", target / "s.h5"), expect)
    one_line_failure(cli("collect", *TINY, "--data", image_folder, "--out", target / "b"), expect)
    one_line_failure(cli("distill", "--data", image_folder, "--model", "conftest:tiny_net", "--weights", "none", "--student", "conftest:tiny_net",
                         "--test", image_folder, "--out", target / "run", "--epochs", "1"), expect)


def test_distill_and_demo_refuse_a_users_folder(image_folder: Path, tmp_path: Path):
    mine = user_tree(tmp_path / "mine")
    before = snapshot(mine)
    one_line_failure(cli("distill", "--data", image_folder, "--model", "conftest:tiny_net", "--weights", "none", "--student", "conftest:tiny_net",
                         "--test", image_folder, "--out", mine, "--overwrite", "--epochs", "1"), "also holds 'photos'")
    one_line_failure(cli("demo", "--out", mine, "--quick"), "has no .sowmeta-demo marker")
    assert snapshot(mine) == before


# --- 2. a manifest never names code to run, nor weights to read or download ------------------------------


@pytest.mark.parametrize("arch", ["os:_exit", "this:s", "builtins:print"])
def test_manifest_naming_code_is_invalid_everywhere(bundle_copy: Path, tmp_path: Path, arch: str, capfd: pytest.CaptureFixture):
    edit_manifest(bundle_copy, lambda d: d["model"].update(architecture=arch))
    for args in (["synthesize", "--bundle", bundle_copy, "--out", tmp_path / "s.h5", "-q"], ["validate", bundle_copy],
                 ["push", bundle_copy, "me/evil", "--registry", tmp_path / "reg"], ["inspect", bundle_copy]):
        one_line_failure(cli(*args), "names Python code, which a manifest may never do")
    assert "Zen of Python" not in capfd.readouterr().out  # `this:s` would have printed it on import
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "reg").exists()


def test_custom_model_in_manifest_needs_the_users_model(bundle_dir: Path, tmp_path: Path):
    one_line_failure(cli("synthesize", "--bundle", bundle_dir, "--classes", "0", "--out", tmp_path / "s.h5", "-q"),
                     "never runs from a manifest; pass --model conftest:tiny_net")


@pytest.mark.parametrize("weights", ["/etc/passwd", "https://example.com/evil.pt", "../../secret.safetensors"])
def test_manifest_weights_are_never_read_or_downloaded(bundle_copy: Path, tmp_path: Path, weights: str):
    def change(d: dict) -> None:
        d["model"].update(architecture="cifar-resnet20", weights=weights)

    edit_manifest(bundle_copy, change)
    # the manifest's content changed after writing: the bundle is refused as tampered before anything else
    one_line_failure(cli("synthesize", "--bundle", bundle_copy, "--out", tmp_path / "s.h5", "-q"), "was changed after the bundle was written")
    from sowmeta.models import load_model_from_record

    with pytest.raises(E.WeightsError, match="does not fetch from a manifest; pass weights=FILE"):
        load_model_from_record("cifar-resnet20", recorded_weights=weights)


def test_unknown_architecture_in_manifest_is_refused():
    from sowmeta.models import load_model_from_record

    with pytest.raises(E.ModelError, match="not a sowmeta or torchvision model"):
        load_model_from_record("totally-unknown", recorded_weights=None)


def reseal(path: Path) -> None:
    """Seal an edited manifest as its author could (digest in every file, sha256s): a stranger's bundle that is valid."""
    import hashlib

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from sowmeta.bundle.manifest import content_digest

    d = json.loads((path / "sowmeta.json").read_text())
    digest = content_digest(d, d["format_version"])
    for entry in d["files"]:
        f = path / entry["name"]
        with safe_open(str(f), framework="pt") as h:
            meta = h.metadata()
        save_file(load_file(str(f)), str(f), metadata={**meta, "manifest_sha256": digest})
        entry.update(sha256=hashlib.sha256(f.read_bytes()).hexdigest(), size=f.stat().st_size)
    (path / "sowmeta.json").write_text(json.dumps(d))


def test_a_manifest_sets_only_shape_arguments_of_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """model.args from a stranger: img_size and the like rebuild the model; checkpoint_path, pretrained, ... are refused."""
    import dataclasses

    pytest.importorskip("timm")
    from sowmeta.bundle import load_model_for

    shape = {"img_size": 32, "patch_size": 8, "depth": 2}
    model = load_model("timm:vit_tiny_patch16_224", weights="none", args=shape)
    collect(model, write_image_folder(tmp_path / "data", classes=3, per_class=2, size=32), batch_size=6, out=tmp_path / "b")
    manifest = Bundle.read_manifest(tmp_path / "b")
    rebuilt = load_model_for(manifest, weights="none")
    assert rebuilt.preprocessing.crop == 32 and rebuilt.args == shape and rebuilt.module.patch_embed.patch_size == (8, 8)
    trap = tmp_path / "trap.pth"
    torch.save({"pos_embed": torch.zeros(1)}, trap)
    edit_manifest(tmp_path / "b", lambda d: d["model"]["args"].update(checkpoint_path=str(trap)))
    reseal(tmp_path / "b")
    assert cli("validate", tmp_path / "b").exit_code == 0  # a valid bundle: the format leaves args to the model
    opened: list[object] = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: opened.append(a))
    r = cli("synthesize", "--bundle", tmp_path / "b", "--weights", "none", "--out", tmp_path / "s.h5", "--iterations", "1", "-q")
    one_line_failure(r, "the bundle's model.args sets 'checkpoint_path', which a bundle may not choose")
    assert opened == [] and not (tmp_path / "s.h5").exists()
    for args, expect in (({"pretrained": True}, "'pretrained'"), ({"pretrained_cfg_overlay": {"file": str(trap)}}, "'pretrained_cfg_overlay'"),
                         ({"img_size": "32"}, "img_size='32', which is not a number"), ({"depth": True}, "depth=True")):
        changed = dataclasses.replace(manifest, model=dataclasses.replace(manifest.model, args=args))
        with pytest.raises(E.ModelError, match=expect):
            load_model_for(changed, weights="none")
    assert load_model_for(manifest, weights="none", args={**shape, "drop_rate": 0.0}).args["drop_rate"] == 0.0  # the user's own args pass


def test_labels_from_a_manifest_are_shown_as_text(bundle_copy: Path):
    """Escape bytes, bidirectional overrides and rich markup in a (validly sealed) stranger's labels reach the terminal as text."""
    evil = ["\x1b]0;pwned\x07\x1b[2J", "[red]x[/red]", "\u202eevil", "tab\there"]
    edit_manifest(bundle_copy, lambda d: d["model"].update(labels=evil))
    reseal(bundle_copy)
    r = cli("inspect", bundle_copy)
    assert r.exit_code == 0, r.output
    assert not any(ch in r.output for ch in "\x1b\x07\u202e\t"), repr(r.output)
    for text in ("\\x1b]0;pwned\\x07\\x1b[2J", "[red]x[/red]", "\\u202eevil", "tab\\x09here"):
        assert text in r.output, (text, r.output)


def test_classes_are_indices_or_unambiguous_labels(bundle_copy: Path, tmp_path: Path):
    """Bundle.load and --classes: a bad class is a one-line ConfigError; a label two classes share is refused with both indices."""
    import numpy as np

    from sowmeta.data.class_names import resolve_classes

    for bad, expect in (("c", "'c' is neither a class index nor a label"), (3.0, "3.0 is not a class index"), (True, "True is not a class index"),
                        (None, "NoneType"), (7, "class 7 does not exist")):
        with pytest.raises(E.ConfigError, match=expect):
            Bundle.load(bundle_copy, classes=[bad])
    assert Bundle.load(bundle_copy, classes=[np.int64(2), "1"]).classes == [2, 1]
    edit_manifest(bundle_copy, lambda d: d["model"].update(labels=["crane", "crane", "bird", "cat"]))
    reseal(bundle_copy)
    assert Bundle.load(bundle_copy, classes=["bird", 1]).classes == [2, 1]
    with pytest.raises(E.ConfigError, match="'crane' is ambiguous: classes 0 and 1 of this bundle are all labelled 'crane'"):
        Bundle.load(bundle_copy, classes=["crane"])
    r = cli("synthesize", "--bundle", bundle_copy, *SYNTH, "--classes", "crane", "--out", tmp_path / "s.h5")
    one_line_failure(r, "'crane' is ambiguous: classes 0 and 1 of the model are all labelled 'crane'; pass the index")
    timm_data = pytest.importorskip("timm.data")
    info = timm_data.ImageNetInfo()
    imagenet = [info.index_to_description(i) for i in range(1000)]  # ImageNet-1k's own class names
    assert [i for i, name in enumerate(imagenet) if name == "crane"] == [134, 517]
    with pytest.raises(E.ConfigError, match="classes 134 and 517"):
        resolve_classes(["crane"], imagenet, 1000)
    assert resolve_classes(["517", 134, "goldfish, Carassius auratus"], imagenet, 1000) == [517, 134, 1]


# --- 3. class folders are matched by name, never silently by position -------------------------------------


def _cifar_folder(root: Path, names: list[str], per_class: int = 2) -> Path:
    """Folders of 32 px images, a colour that depends on the folder's name only."""
    import zlib

    from PIL import Image

    for n in names:
        (root / n).mkdir(parents=True)
        c = zlib.crc32(n.encode())
        for j in range(per_class):
            Image.new("RGB", (32, 32), (c & 255, (c >> 8) & 255, 7 * j)).save(root / n / f"{j}.png")
    return root


@pytest.mark.parametrize(("names", "expect"), [
    (["cat", "dog"], {"cat": 3, "dog": 5}),
    (["airplane", "automobile", "cat"], {"airplane": 0, "automobile": 1, "cat": 3}),
    (["003_cat", "5-dog"], {"003_cat": 3, "5-dog": 5}),
    (["3", "9"], {"3": 3, "9": 9}),
    (["Cat", "DOG"], {"Cat": 3, "DOG": 5}),
])
def test_folders_map_to_classes_by_name(tmp_path: Path, names: list[str], expect: dict[str, int]):
    data = _cifar_folder(tmp_path / "d", names)
    model = load_model("cifar-resnet20", weights=None)
    bundle, _ = collect(model, data, batch_size=4)
    assert {k for k in range(10) if bundle.counts[k] > 0} == set(expect.values())
    assert bundle.labels[3] == "cat"  # the model's own labels are kept
    # independent check: the statistics of class k are those of folder k's images alone
    for folder, k in expect.items():
        only, _ = collect(model, _cifar_folder(tmp_path / f"only-{folder}", [folder]), batch_size=4)
        torch.testing.assert_close(bundle.stats["bn1"].mean[k], only.stats["bn1"].mean[k])


def test_unnamed_folders(tmp_path: Path):
    model = load_model("cifar-resnet20", weights=None)
    ten = _cifar_folder(tmp_path / "ten", [f"x{i}" for i in range(10)], per_class=1)
    notes: list[str] = []
    bundle, _ = collect(model, ten, batch_size=5, notice=notes.append)
    assert bundle.counts.tolist() == [1] * 10 and len(notes) == 1 and "sorted order is used" in notes[0]
    three = _cifar_folder(tmp_path / "three", ["a1", "b2", "c3"], per_class=1)
    with pytest.raises(E.DataError, match="name none of the model's 10 classes.*--labels-by-position"):
        collect(model, three, batch_size=5)
    forced, _ = collect(model, three, batch_size=5, labels_by_position=True)
    assert forced.counts.tolist()[:4] == [1, 1, 1, 0]
    mixed = _cifar_folder(tmp_path / "mixed", ["cat", "doge"], per_class=1)
    with pytest.raises(E.DataError, match="'doge' is not one of the model's class labels \\(did you mean 'dog'\\?\\)"):
        collect(model, mixed, batch_size=5)
    r = cli("collect", "--model", "cifar-resnet20", "--weights", "none", "--data", three, "--out", tmp_path / "b", "--workers", "0")
    one_line_failure(r, "--labels-by-position")


def test_an_index_prefix_that_contradicts_the_name_is_refused(tmp_path: Path):
    """0_cat for CIFAR-10: the prefix says airplane, the name says cat; both readings are named, nothing is collected."""
    data = _cifar_folder(tmp_path / "d", ["0_cat", "1_dog"], per_class=1)
    model = load_model("cifar-resnet20", weights=None)
    with pytest.raises(E.DataError, match="'0_cat' says class 0 \\('airplane'\\) by its index prefix but class 3 \\('cat'\\) by its name"):
        collect(model, data, batch_size=2)
    r = cli("collect", "--model", "cifar-resnet20", "--weights", "none", "--data", data, "--out", tmp_path / "b", "--workers", "0")
    one_line_failure(r, "rename it 003_cat or 000_airplane")
    assert not (tmp_path / "b").exists()
    agreeing, _ = collect(model, _cifar_folder(tmp_path / "ok", ["003_cat", "5_dog", "9_lorry"], per_class=1), batch_size=3)
    assert agreeing.counts.tolist() == [0, 0, 0, 1, 0, 1, 0, 0, 0, 1]  # a name that is no label is not a contradiction


def _bomb_png(path: Path, side: int = 20_000) -> Path:
    """A PNG whose header promises side x side pixels (400 Mpx at the default): a decompression bomb of a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))
    return path


def _bomb_jpeg(path: Path, side: int = 20_000) -> Path:
    """A real JPEG whose frame header is changed to side x side pixels."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (12, 12), (9, 99, 199)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = side.to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))
    return path


def test_stray_files_and_decompression_bombs(tmp_path: Path):
    """macOS's ._ files, hidden folders and __MACOSX are not images; a bomb is an undecodable image (skipped, or one line)."""
    from sowmeta.data.folders import jpeg_pixels

    data = write_image_folder(tmp_path / "data", classes=3, per_class=2)
    (data / "0_c0" / "._img000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (data / "1_c1" / ".DS_Store").write_bytes(b"\0" * 64)
    (data / "1_c1" / ".ipynb_checkpoints").mkdir()
    (data / "1_c1" / ".ipynb_checkpoints" / "img000-checkpoint.png").write_bytes((data / "1_c1" / "img000.png").read_bytes())
    (data / "__MACOSX" / "0_c0").mkdir(parents=True)
    (data / "__MACOSX" / "0_c0" / "._img001.png").write_bytes(b"\x00\x05\x16\x07")
    bundle, report = collect(loaded_tiny(weights="none"), data, batch_size=4)
    assert report.skipped == [] and bundle.counts.tolist()[:3] == [2, 2, 2]
    _bomb_png(data / "2_c2" / "bomb.png")
    jpeg = _bomb_jpeg(data / "2_c2" / "bomb.jpg")
    assert jpeg_pixels(jpeg.read_bytes()) == 400_000_000
    bundle, report = collect(loaded_tiny(weights="none"), data, batch_size=4)
    assert sorted(Path(p).name for p in report.skipped) == ["bomb.jpg", "bomb.png"] and bundle.counts.tolist()[:3] == [2, 2, 2]
    r = cli("collect", *TINY, "--data", data, "--out", tmp_path / "b", "--strict")
    one_line_failure(r, "corrupt image: cannot decode image")
    r = cli("evaluate", "--data", data, "--model", "conftest:tiny_net", "--weights", "none", "--workers", "0", "-q")
    one_line_failure(r, "too large to decode (a decompression bomb?)")


def test_imagenet_wordnet_ids_need_no_flag(tmp_path: Path):
    from sowmeta.data.class_folders import imagenet_wnids, map_class_folders

    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and list(wnids) == sorted(wnids)
    labels = load_model("resnet18", weights="none").labels
    m = map_class_folders(["n01443537", "n02123045", "n07753592"], labels, 1000)
    assert m.indices == [1, 281, 954] and m.how == "WordNet ids"
    assert [labels[i] for i in m.indices] == ["goldfish", "tabby", "banana"]


def test_synthesizing_a_class_without_statistics_is_an_error(tmp_path: Path):
    model = load_model("cifar-resnet20", weights=None)
    bundle, _ = collect(model, _cifar_folder(tmp_path / "d", ["cat", "dog"], per_class=1), batch_size=2, out=tmp_path / "b")
    assert bundle.manifest.source.empty_classes == [0, 1, 2, 4, 6, 7, 8, 9]
    from sowmeta.synth import SynthConfig, synthesize

    with pytest.raises(E.ConfigError, match="'bird' \\(2\\) has no statistics in this bundle"):
        synthesize(tmp_path / "b", model, classes=["bird"], per_class=1, config=SynthConfig.cifar(iterations=1))


# --- 4. nothing unfinished is scored ---------------------------------------------------------------------


def test_unfinished_synthesis_file_is_refused(tmp_path: Path, image_folder: Path):
    partial = tmp_path / "s.h5.partial"
    with h5py.File(partial, "w") as f:
        f.create_dataset("images", data=np.zeros((8, 12, 12, 3), np.uint8))
        f.create_dataset("labels", data=np.zeros(8, np.int64))
        f.create_dataset("batch_done", data=np.array([1, 1, 0, 1], np.uint8))
        f.attrs["format"] = "sowmeta-synth"
    one_line_failure(cli("evaluate", "--data", partial, "--model", "conftest:tiny_net", "--weights", "none", "-q"), "unfinished synthesis run (3 of 4 batches done)")
    one_line_failure(cli("distill", "--data", partial, "--model", "conftest:tiny_net", "--weights", "none", "--student", "conftest:tiny_net",
                         "--test", image_folder, "--out", tmp_path / "run", "--epochs", "1", "-q"), "run the same `sowmeta synthesize` command again")
    assert not (tmp_path / "run").exists()


def test_a_synthesis_file_without_its_batch_bookkeeping_is_refused(tmp_path: Path, image_folder: Path):
    """A sowmeta-synth file whose batch_done is missing could be unfinished: neither evaluated nor distilled."""
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((8, 12, 12, 3), np.uint8))
        f.create_dataset("labels", data=np.arange(8, dtype=np.int64) % 4)
        f.attrs["format"] = "sowmeta-synth"
    expect = "without its batch bookkeeping ('batch_done')"
    one_line_failure(cli("evaluate", "--data", path, "--model", "conftest:tiny_net", "--weights", "none", "-q"), expect)
    one_line_failure(cli("distill", "--data", path, "--model", "conftest:tiny_net", "--weights", "none", "--student", "conftest:tiny_net",
                         "--test", image_folder, "--out", tmp_path / "run", "--epochs", "1", "-q"), expect)
    assert not (tmp_path / "run").exists()


# --- 5. tensor values and manifest sizes are checked -------------------------------------------------------


def _nan_mean(t: dict) -> None:
    t["bn2/mean"][1, 3] = float("nan")


def _neg_var(t: dict) -> None:
    t["bn1/var"][2, 0] = -0.5


def _neg_count(t: dict) -> None:
    t["counts"][0] = -3


def _float64(t: dict) -> None:
    t["bn1/mean"] = t["bn1/mean"].double()


def _inf_global(t: dict) -> None:
    t["bn1/global_var"][1] = float("inf")


@pytest.mark.parametrize(("change", "expect"), [
    (_nan_mean, "tap 'bn2', class 1, channel 3: mean is nan"),
    (_neg_var, "tap 'bn1', class 2, channel 0: var is -0.5"),
    (_neg_count, "class 0 has a negative image count"),
    (_float64, "'bn1/mean' is F64 [4, 6], the manifest says F32 [4, 6]"),
    (_inf_global, "tap 'bn1', channel 1: global_var is inf"),
])
def test_bad_tensor_values_are_named(bundle_copy: Path, change, expect: str, tmp_path: Path):  # noqa: ANN001
    rewrite_tensors(bundle_copy, change)
    one_line_failure(cli("validate", bundle_copy), expect)
    one_line_failure(cli("synthesize", "--bundle", bundle_copy, *SYNTH, "--out", tmp_path / "s.h5"), expect)
    assert not (tmp_path / "s.h5").exists()


CONFORMANCE = Path(__file__).parent / "conformance"


@pytest.mark.parametrize(("case", "rule"), [
    ("counts--zero-not-listed", "counts"), ("counts--listed-not-zero", "counts"), ("counts--sum", "counts"),
    ("image-var-every-tap--one-tap", "image-var-every-tap"), ("file-tensors--extra", "file-tensors"),
    ("manifest-json--duplicate-key", "manifest-json"), ("safetensors--overlap", "safetensors"), ("safetensors--trailing-bytes", "safetensors"),
    ("global-pooling--var", "global-pooling"), ("global-pooling--mean", "global-pooling"),
])
def test_what_validate_used_to_accept_is_refused_by_rule(case: str, rule: str, tmp_path: Path):
    """The crafted bundles validate accepted although the format forbids them (tests/conformance has every rule): refused, naming the rule."""
    import shutil

    copy = Path(shutil.copytree(CONFORMANCE / "invalid" / case, tmp_path / case))
    one_line_failure(cli("validate", copy), f"[rule {rule}]")
    one_line_failure(cli("synthesize", "--bundle", copy, "--out", tmp_path / "s.h5", "-q"), f"[rule {rule}]")
    assert not (tmp_path / "s.h5").exists()


def test_repeated_labels_are_valid_and_named_by_index(tmp_path: Path):
    """Two classes may share a label (ImageNet's cranes): the bundle is valid; naming the label alone is refused."""
    bundle = CONFORMANCE / "valid" / "1.4-repeated-labels"
    assert cli("validate", bundle).exit_code == 0
    with pytest.raises(E.ConfigError, match="'crane' is ambiguous: classes 0 and 1"):
        Bundle.load(bundle, classes=["crane"])
    assert Bundle.load(bundle, classes=[1, "bird"]).classes == [1, 2]


@pytest.mark.parametrize(("change", "expect"), [
    (lambda d: d["model"].update(labels=["a", "b"]), "2 labels for 4 classes"),
    (lambda d: d["taps"].append(dict(d["taps"][0])), "tap 'bn1' is listed twice"),
    (lambda d: d["model"].update(num_classes=10**7), "num_classes"),
    (lambda d: d["model"].update(num_classes=10**18), "the integer 1000000000000000000 is beyond ±(2^53-1)"),
    (lambda d: d["taps"][0].update(channels=2**40), "channels"),
    (lambda d: d["preprocessing"].update(crop=10**9), "crop"),
    (lambda d: d["files"][0]["tensors"].remove("bn1/var"), "'bn1/var' is listed in no file"),
    (lambda d: d["preprocessing"].update(mean=[float("nan")] * 3), "not valid JSON"),
    (lambda d: d["source"].update(compression="jpeg"), "source/compression"),
    (lambda d: d["source"].update(compression={"files_sampled": 1, "jpeg_files": 5, "quality": 75, "subsampling": "4:2:0", "width": 32,
                                               "height": 32}), "5 JPEGs of 1 sampled files"),
    (lambda d: d["source"].update(compression={"files_sampled": 1, "jpeg_files": 1, "quality": 75, "subsampling": "4:2:0", "width": 10**12,
                                               "height": 32}), "source/compression/width"),
])
def test_inconsistent_or_unbounded_manifests_are_invalid(bundle_copy: Path, change, expect: str):  # noqa: ANN001
    d = json.loads((bundle_copy / "sowmeta.json").read_text())
    change(d)
    (bundle_copy / "sowmeta.json").write_text(json.dumps(d))  # json.dumps writes NaN for nan: invalid JSON
    for command in ("validate", "inspect", "push"):
        args = [command, bundle_copy] + (["me/x", "--registry", bundle_copy.parent / "reg"] if command == "push" else [])
        one_line_failure(cli(*args), expect)


# --- 6. absurd options and failed runs --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "1e30", "-1", "0"])
def test_absurd_learning_rates_are_refused_up_front(bundle_dir: Path, tmp_path: Path, value: str):
    r = cli("synthesize", "--bundle", bundle_dir, *SYNTH, "--out", tmp_path / "s.h5", "--lr", value)
    one_line_failure(r, "learning rate must be a number in (0, 10.0]")
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "s.h5.partial").exists()


@pytest.mark.parametrize(("option", "value"), [("--alpha-cc", "inf"), ("--alpha-tv", "nan"), ("--init-noise", "-1"), ("--first-tap-multiplier", "1e300")])
def test_absurd_weights_are_refused_up_front(bundle_dir: Path, tmp_path: Path, option: str, value: str):
    one_line_failure(cli("synthesize", "--bundle", bundle_dir, *SYNTH, "--out", tmp_path / "s.h5", option, value), "must be a number in [0, 1e+06]")


@pytest.mark.parametrize("value", ["inf", "nan", "1e30", "-1", "0"])
def test_absurd_distillation_learning_rates_are_refused_up_front(image_folder: Path, tmp_path: Path, value: str):
    r = cli("distill", "--data", image_folder, "--model", "conftest:tiny_net", "--weights", "none", "--student", "conftest:tiny_net",
            "--test", image_folder, "--out", tmp_path / "run", "--epochs", "1", "--lr", value)
    one_line_failure(r, "learning rate must be a number in (0, 10]")
    assert not (tmp_path / "run").exists()


def test_a_device_this_machine_lacks_is_one_line(image_folder: Path, bundle_dir: Path, tmp_path: Path):
    """--device cuda without CUDA (or past the last GPU): one line before any work, from every command and the API."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device, expect = (f"cuda:{count}", f"this machine has {count} CUDA device(s)") if count else ("cuda", "this machine has no CUDA device")
    commands = [
        ["collect", *TINY, "--data", image_folder, "--out", tmp_path / "b"],
        ["synthesize", "--bundle", bundle_dir, *SYNTH, "--out", tmp_path / "s.h5"],
        ["evaluate", "--data", image_folder, "--model", "conftest:tiny_net", "--weights", "none", "-q"],
        ["distill", "--data", image_folder, "--model", "conftest:tiny_net", "--weights", "none", "--student", "conftest:tiny_net",
         "--test", image_folder, "--out", tmp_path / "run", "--epochs", "1"],
    ]
    for args in commands:
        one_line_failure(cli(*args, "--device", device), expect)
    one_line_failure(cli(*commands[0], "--device", "gpu0"), "is not one torch knows")
    assert not any((tmp_path / name).exists() for name in ("b", "s.h5", "s.h5.partial", "run"))
    with pytest.raises(E.ConfigError, match=expect.replace("(", "\\(").replace(")", "\\)")):
        collect(loaded_tiny(weights="none"), image_folder, device=device)


def test_a_run_at_chance_fails_loudly_unless_allowed(bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sowmeta.synth as synth
    from sowmeta.synth import SynthConfig, SynthResult

    def at_chance(*a, out=None, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        Path(out).write_bytes(b"")
        return SynthResult(Path(out), torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0]), torch.full((4,), 0.25),
                           ["a", "b", "c", "d"], SynthConfig(), 1.0, 0, torch.zeros(4, 3, 12, 12, dtype=torch.uint8))

    monkeypatch.setattr(synth, "synthesize", at_chance)
    args = ["synthesize", "--bundle", bundle_dir, *SYNTH, "--out", tmp_path / "s.h5"]
    r = cli(*args)
    assert r.exit_code == 1 and "the teacher recognises only 0.0% of the images (chance is 25.0%): the run failed" in r.output
    assert "--allow-low-confidence" in r.output and (tmp_path / "s.h5").exists()  # the file is kept for inspection
    assert cli(*args, "--overwrite", "--allow-low-confidence").exit_code == 0


def _with_file_size_limit(limit: int, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    """``sowmeta ARGS`` in a process whose files cannot grow past ``limit`` bytes: writes fail as on a full disk (EFBIG)."""
    script = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
              "from sowmeta.cli.main import main; sys.argv = ['sowmeta', *sys.argv[1:]]; main()")
    env = {**os.environ, "SOWMETA_COMPILE": "0", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_a_full_disk_during_collect_and_synthesize_is_one_line(image_folder: Path, bundle_dir: Path, tmp_path: Path):
    """Real write failures (a file size limit): one line naming the file and the fix; no bundle half-written, the .partial kept."""
    r = _with_file_size_limit(1500, "collect", *TINY, "--data", image_folder, "--out", tmp_path / "b", "-q", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"cannot write {tmp_path / 'b'}: File too large; free some space" in r.stderr
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.tmp-*"))
    out = tmp_path / "s.h5"
    r = _with_file_size_limit(12000, "synthesize", "--bundle", bundle_dir, *SYNTH, "--per-class", "3", "--classes", "0,1,2", "--out", out,
                              "--allow-low-confidence", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"cannot write {out}.partial: File too large; free some space and run the same command again" in r.stderr
    assert (tmp_path / "s.h5.partial").exists() and not out.exists()


# --- 7. skipping the weights check never skips the architecture check -----------------------------------------


def test_no_fingerprint_check_still_refuses_another_architecture(tmp_path: Path):
    data = _cifar_folder(tmp_path / "d", ["cat", "dog"], per_class=1)
    r20 = load_model("cifar-resnet20", weights=None)
    torch.manual_seed(0)
    bundle, _ = collect(r20, data, batch_size=2, out=tmp_path / "b20")
    r56 = load_model("cifar-resnet56", weights=None)
    with pytest.raises(E.ModelMismatchError, match="architecture differs"):
        bundle.check(r56.module, check_weights=False)
    other_r20 = load_model("cifar-resnet20", weights=None)
    bundle.check(other_r20.module, check_weights=False)  # same architecture, other weights: allowed by the flag
    with pytest.raises(E.ModelMismatchError, match="fingerprint"):
        bundle.check(other_r20.module)
    r = cli("synthesize", "--bundle", tmp_path / "b20", "--model", "cifar-resnet56", "--weights", "none", "--no-fingerprint-check",
            "--classes", "cat", "--per-class", "1", "--iterations", "1", "--out", tmp_path / "s.h5", "-q")
    one_line_failure(r, "architecture differs")


_PLANTED = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(getenv("PLANTED_MARKER"), "w");
    if (f) { fputs("the planted library ran\n", f); fclose(f); }
}
"""


@pytest.mark.skipif(not __import__("shutil").which(os.environ.get("CC") or "cc"), reason="needs a C compiler to build the kernel")
def test_a_planted_native_library_never_runs(tmp_path: Path):
    """A library planted at the kernel's cache path (writable folder, another owner, or just other bytes) is never loaded."""
    import shutil

    from sowmeta.moments import native as bn_moments
    from sowmeta.moments.native_build import library_path

    cache, marker = tmp_path / "cache", tmp_path / "planted-ran"
    env = {**os.environ, "SOWMETA_CACHE": str(cache), "PLANTED_MARKER": str(marker)}
    probe = [sys.executable, "-c", "from sowmeta.moments import native; print(native.available())"]

    def available() -> bool:
        return subprocess.run(probe, env=env, capture_output=True, text=True, check=True, timeout=300).stdout.strip() == "True"

    assert available()  # builds the real kernel into the cache
    runtime = bn_moments._torch_openmp()
    target = library_path(cache / "native", bn_moments._SOURCE, shutil.which(os.environ.get("CC") or "cc"), bn_moments._FLAGS, runtime)
    assert target.is_file() and target.with_name(target.name + ".sha256").is_file()
    (tmp_path / "planted.c").write_text(_PLANTED)
    subprocess.run([shutil.which(os.environ.get("CC") or "cc"), "-shared", "-fPIC", str(tmp_path / "planted.c"), "-o", str(tmp_path / "planted.so")],
                   check=True, timeout=120)
    plants = [("a world-writable cache folder", 0o777, 0o666), ("another owner's file", 0o700, 0o644), ("other bytes", 0o700, 0o644)]
    for what, folder_mode, file_mode in plants:
        shutil.copyfile(tmp_path / "planted.so", target)
        target.chmod(file_mode)
        (cache / "native").chmod(folder_mode)
        if what == "another owner's file":
            if os.geteuid() != 0:
                continue  # only root can give a file to another user
            os.chown(target, 65534, 65534)
        assert available(), what  # the kernel still works: built again, or for this process alone
        assert not marker.exists(), f"{what}: the planted library ran"
        (cache / "native").chmod(0o700)
    assert target.read_bytes() != (tmp_path / "planted.so").read_bytes()  # built over, with its own record


# --- 8. the Hub client never hangs ----------------------------------------------------------------------


@pytest.fixture
def silent_endpoint(registry_env: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A port that accepts connections (the kernel's backlog) and never answers a byte."""
    from sowmeta.hub import http

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    monkeypatch.setenv("SOWMETA_HUB_TIMEOUT", "1")
    http.forget_failures()
    yield s
    s.close()
    http.forget_failures()


def test_hub_calls_time_out_with_one_line(silent_endpoint: socket.socket, make_bundle, tmp_path: Path):  # noqa: ANN001
    src = make_bundle()
    for args in (["pull", "me/x", "--registry", "hub"], ["push", src, "me/x", "--registry", "hub"], ["list", "--registry", "hub"]):
        from sowmeta.hub import http

        http.forget_failures()
        start = time.monotonic()
        r = cli(*args)
        took = time.monotonic() - start
        one_line_failure(r, "did not answer")
        assert took < 8, (args, took)


def test_a_hub_answer_cut_short_dripping_or_from_a_proxy_is_one_line(fake_hub, make_bundle, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001
    """Bodies shorter than their Content-Length, bodies at a byte every 0.2 s, HTML 200 pages: one line each, within seconds."""
    from sowmeta.hub import http
    from sowmeta import registry

    registry.push(make_bundle(), "alice/b", registry="hub")
    monkeypatch.setenv("SOWMETA_HUB_TIMEOUT", "1")

    def pull_fails(expect: str, within: float) -> None:
        http.forget_failures()
        start = time.monotonic()
        one_line_failure(cli("pull", "alice/b", "--registry", "hub"), expect)
        assert time.monotonic() - start < within

    for short in ("cut", "length"):
        fake_hub.short_bodies = short
        pull_fails("network error: pulling alice/b@main: the connection to", 10)
    fake_hub.short_bodies = None
    fake_hub.drip_seconds = 0.2
    pull_fails("sent too slowly", 12)  # 5 bytes/s: below the floor once the first second has passed
    monkeypatch.setattr(http, "MIN_BYTES_PER_S", 1)  # the floor met: the whole pull's deadline ends it
    monkeypatch.setenv("SOWMETA_HUB_DEADLINE", "3")
    pull_fails("did not finish within SOWMETA_HUB_DEADLINE=3 s", 12)
    fake_hub.drip_seconds = 0
    fake_hub.proxy_page = True
    pull_fails("answered with an HTML page, not as the Hub does", 10)
    fake_hub.proxy_page = False
    http.forget_failures()
    assert cli("pull", "alice/b", "--registry", "hub").exit_code == 0  # and the Hub itself still works


def test_hub_list_against_a_closed_port_is_quick(registry_env: Path, monkeypatch: pytest.MonkeyPatch):
    from sowmeta.hub import http

    http.forget_failures()
    start = time.monotonic()
    r = cli("list", "--registry", "hub")  # registry_env points HF_ENDPOINT at a closed port
    one_line_failure(r, "network error")
    assert time.monotonic() - start < 5


def test_environment_typos_are_one_line_errors(bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """SOWMETA_REGISTRY=Hub no longer pushes into a new ./Hub folder; SOWMETA_HUB_TIMEOUT=3s is no longer 30 s."""
    monkeypatch.chdir(tmp_path)
    for value, expect in (("Hub", "did you mean 'hub'?"), ("hbu", "did you mean 'hub'?"), ("LOCAL", "did you mean 'local'?")):
        one_line_failure(cli("push", bundle_dir, "me/b", env={"SOWMETA_REGISTRY": value}), f"registry {value!r} (SOWMETA_REGISTRY) names no backend")
        one_line_failure(cli("list", "--registry", value), "for a new local registry folder here write ./")
    assert list(tmp_path.iterdir()) == []
    assert cli("push", bundle_dir, "me/b", env={"SOWMETA_REGISTRY": "./Hub"}).exit_code == 0 and (tmp_path / "Hub" / "me" / "b").is_dir()
    for var, value in (("SOWMETA_HUB_TIMEOUT", "3s"), ("SOWMETA_HUB_TIMEOUT", "0"), ("SOWMETA_HUB_DEADLINE", "1h"), ("SOWMETA_HUB_DEADLINE", "nan")):
        one_line_failure(cli("pull", "me/b", "--registry", "hub", env={var: value}), f"{var}={value!r} is not a number of seconds")
    from sowmeta import env

    monkeypatch.setenv("SOWMETA_HUB_TIMEOUT", " 2.5 ")
    assert env.hub_timeout() == 2.5


# --- 9. a damaged stored copy is repaired by pushing again ------------------------------------------------


def test_push_repairs_a_damaged_local_revision(bundle_dir: Path, tmp_path: Path):
    from sowmeta import registry

    reg = tmp_path / "reg"
    first = registry.push(bundle_dir, "me/b", registry=reg)
    stored = first.path / "stats.safetensors"
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(E.ChecksumError):
        registry.pull("me/b", registry=reg)
    again = registry.push(bundle_dir, "me/b", registry=reg)
    assert again.commit == first.commit
    assert registry.pull("me/b", registry=reg).path == first.path
    assert stored.read_bytes() == (bundle_dir / "stats.safetensors").read_bytes()


@pytest.mark.parametrize("damage", ["manifest", "tag", "ref"])
def test_push_again_repairs_a_damaged_manifest_tag_or_ref(bundle_dir: Path, tmp_path: Path, damage: str):
    """The advice a damaged local registry gives (push again, with the tag or revision named) works: it does not loop."""
    from sowmeta import registry

    reg = tmp_path / "reg"
    first = registry.push(bundle_dir, "me/b", registry=reg, tag="v1")
    broken = {"manifest": first.path / "sowmeta.json", "tag": reg / "me" / "b" / "tags" / "v1", "ref": reg / "me" / "b" / "refs" / "main"}[damage]
    broken.chmod(0o644)
    broken.write_text("{damaged")
    ref, again, expect = {"manifest": ("me/b", [], "push the bundle again to repair it"),
                          "tag": ("me/b@v1", ["--tag", "v1"], "push the bundle again with --tag v1"),
                          "ref": ("me/b", [], "push the bundle again with --revision main")}[damage]
    one_line_failure(cli("pull", ref, "--registry", reg), expect)
    assert cli("push", bundle_dir, "me/b", "--registry", reg, *again).exit_code == 0
    pulled = registry.pull(ref, registry=reg)
    assert pulled.commit == first.commit
    assert (pulled.path / "sowmeta.json").read_bytes() == (bundle_dir / "sowmeta.json").read_bytes()


# --- 10. one line instead of a traceback -------------------------------------------------------------------


def test_damaged_bundles_in_inspect_and_validate(bundle_copy: Path, tmp_path: Path):
    data = (bundle_copy / "stats.safetensors").read_bytes()
    manifest_only = tmp_path / "m"
    manifest_only.mkdir()
    (manifest_only / "sowmeta.json").write_bytes((bundle_copy / "sowmeta.json").read_bytes())
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    huge = bytearray(data)
    huge[:8] = struct.pack("<Q", 2**62)
    cases = [(data[: len(data) // 2], "truncated or replaced"), (bytes(flipped), "differs from the manifest"), (bytes(huge), "differs from the manifest")]
    for content, expect in cases:
        (bundle_copy / "stats.safetensors").write_bytes(content)
        one_line_failure(cli("inspect", bundle_copy), expect)
        one_line_failure(cli("validate", bundle_copy), expect)
    one_line_failure(cli("inspect", manifest_only), "is missing; the bundle is incomplete")
    (bundle_copy / "stats.safetensors").write_bytes(bytes(huge))
    with pytest.raises(E.CorruptBundleError):
        Bundle.load(bundle_copy, verify=False)


def test_registry_destinations(bundle_dir: Path, tmp_path: Path):
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    one_line_failure(cli("push", bundle_dir, "me/b", "--registry", a_file), "is a file; pass 'hub', 'local' or a directory")
    one_line_failure(cli("list", "--registry", a_file), "is a file")
    assert cli("push", bundle_dir, "me/b", "--registry", tmp_path / "reg").exit_code == 0
    one_line_failure(cli("pull", "me/b", "--registry", tmp_path / "reg", "--to", a_file), "is not an empty directory")
    one_line_failure(cli("pull", "me/b", "--registry", tmp_path / "reg", "--to", a_file / "sub"), "is a file, not a directory")
    one_line_failure(cli("push", bundle_dir, "me/b", "--registry", tmp_path / "reg", "--revision", ""), "is not a revision name")
    assert a_file.read_text() == "mine"


# --- 11. the smaller ones -------------------------------------------------------------------------------


def test_empty_classes_and_revisions(bundle_dir: Path, tmp_path: Path):
    one_line_failure(cli("synthesize", "--bundle", bundle_dir, *SYNTH, "--classes", "", "--out", tmp_path / "s.h5"), "names no class")
    one_line_failure(cli("synthesize", "--bundle", bundle_dir, *SYNTH, "--classes", " , ", "--out", tmp_path / "s.h5"), "names no class")
    from sowmeta import registry

    reg = tmp_path / "reg"
    registry.push(bundle_dir, "me/b", registry=reg)
    for rev in ("", " ", "../main"):
        with pytest.raises(E.ConfigError, match="is not a revision name"):
            registry.push(bundle_dir, "me/b", registry=reg, revision=rev)
        with pytest.raises(E.ConfigError, match="is not a revision name"):
            registry.pull("me/b", registry=reg, revision=rev)
    one_line_failure(cli("pull", "me/b@", "--registry", reg), "ends with '@'")


def test_pickle_checkpoint_is_one_line(tmp_path: Path):
    import pathlib

    evil = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "obj": pathlib.PurePosixPath("/etc")}, evil)
    r = cli("collect", "--model", "cifar-resnet20", "--weights", evil, "--data", tmp_path / "data", "--out", tmp_path / "b")
    one_line_failure(r, "sowmeta never unpickles")


def test_symlink_leaving_the_bundle_is_refused(bundle_copy: Path, tmp_path: Path):
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes((bundle_copy / "stats.safetensors").read_bytes())
    (bundle_copy / "stats.safetensors").unlink()
    (bundle_copy / "stats.safetensors").symlink_to(secret)
    one_line_failure(cli("push", bundle_copy, "me/b", "--registry", tmp_path / "reg"), "outside the bundle")
    assert not list((tmp_path / "reg").rglob("*.safetensors")) if (tmp_path / "reg").exists() else True


# --- the bundle reader under fuzzing -----------------------------------------------------------------------


def test_fuzzed_bundles_never_crash_and_never_pass_with_wrong_numbers(bundle_dir: Path, tmp_path: Path):
    """Random truncations and byte flips of the data file and the manifest: a typed error, or the very same numbers."""
    import random
    import shutil

    good = Bundle.load(bundle_dir)
    rng = random.Random(1234)
    files = {"sowmeta.json": (bundle_dir / "sowmeta.json").read_bytes(), "stats.safetensors": (bundle_dir / "stats.safetensors").read_bytes()}
    accepted = refused = 0
    deadline = time.monotonic() + 20
    for trial in range(400):
        if time.monotonic() > deadline:
            break
        work = tmp_path / f"f{trial}"
        shutil.copytree(bundle_dir, work)
        name = rng.choice(list(files))
        data = bytearray(files[name])
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.choice([1, 1, 2, 8])):
                data[rng.randrange(len(data))] = rng.randrange(256)
        (work / name).write_bytes(bytes(data))
        try:
            b = Bundle.load(work)
        except E.SowmetaError:
            refused += 1
        else:
            accepted += 1
            assert torch.equal(b.counts, good.counts)
            for tap, s in good.stats.items():
                assert torch.equal(b.stats[tap].mean, s.mean) and torch.equal(b.stats[tap].var, s.var)
            assert b.manifest.digest == good.manifest.digest or b.manifest.format_version == "1.0"
        shutil.rmtree(work)
    assert refused > 50


def test_a_model_passed_where_the_bundle_goes_is_named(tmp_path: Path):
    """synthesize(model, bundle) by mistake: one line saying what a bundle is, not an OSError about a long file name."""
    from sowmeta.errors import ConfigError
    from sowmeta.registry.resolve import locate_bundle

    with pytest.raises(ConfigError, match="not a Tiny.*bundle first"):
        locate_bundle(type("Tiny", (), {})())  # type: ignore[arg-type]


def test_data_that_is_a_file_is_called_a_file_not_missing(tmp_path: Path):
    """--data /dev/null (or any file): 'is not a directory', not 'does not exist'."""
    from sowmeta.data.folders import scan_image_folder
    from sowmeta.errors import DataError

    f = tmp_path / "train.zip"
    f.write_bytes(b"PK")
    with pytest.raises(DataError, match="train.zip is not a directory; pass a folder"):
        scan_image_folder(f)
    with pytest.raises(DataError, match="nowhere does not exist"):
        scan_image_folder(tmp_path / "nowhere")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_corrupt_image_read_by_a_loader_worker_is_one_line(tmp_path: Path, workers: str):
    """torch re-raises a worker's error with the worker's whole traceback as its message; the user still gets one line."""
    data = write_image_folder(tmp_path / "data", classes=2, per_class=3, size=32)
    (data / "1_c1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    r = cli("evaluate", "--data", data, "--model", "demo-cnn", "--weights", "none", "--workers", workers, "--batch-size", "2", "-q")
    one_line_failure(r, "corrupt image: cannot decode image ")
    assert "broken.png" in r.output and r.output.strip().endswith("; remove or replace it"), r.output


class _FailingItems(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        if i == 2:
            raise E.ModelMismatchError("tap 'x': 3 channels in the bundle, 4 in the model; collect again", tap="x")
        return i


def test_errors_from_loader_workers_keep_their_type_and_message():
    """The same error raised in a real worker process: its type, its own message, and the worker's traceback as a note."""
    loader = torch.utils.data.DataLoader(_FailingItems(), batch_size=1, num_workers=1)
    with pytest.raises(E.ModelMismatchError) as caught:
        list(loader)
    assert str(caught.value) == "tap 'x': 3 channels in the bundle, 4 in the model; collect again"
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "in DataLoader worker process 0" in notes and "in __getitem__" in notes and "raise E.ModelMismatchError" in notes
    # a message that only looks like torch's is left as it is
    text = "Caught ConfigError in my code.\nOriginal Traceback (most recent call last): nothing"
    assert str(E.ConfigError(text)) == text
