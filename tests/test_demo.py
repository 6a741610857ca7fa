"""`sowmeta demo` at a reduced size: every stage runs offline, the report has its numbers, they are
what an independent recomputation from the written files gives, and cc keeps backgrounds better than di."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import h5py
import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from sowmeta.demo.data import DEMO_CLASSES, border_stats, make_demo_images, make_demo_outlines

STAGES = {"dataset", "train", "registry", "synthesize cc", "synthesize di", "synthesize sketch", "grid+report"}


def _border_distance(images: np.ndarray, labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray, width: int = 3) -> list[float]:
    """Per class: distance of the mean border colour plus distance of the mean border colour spread (NHWC, [0, 1])."""
    frame = np.ones(images.shape[1:3], dtype=bool)
    frame[width:-width, width:-width] = False

    def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pix = x[:, frame, :].astype(np.float64)  # N x P x 3
        return pix.mean(axis=1).mean(axis=0), pix.std(axis=1, ddof=1).mean(axis=0)

    out = []
    for k in range(len(DEMO_CLASSES)):
        (sm, ss), (rm, rs) = stats(images[labels == k]), stats(real[real_labels == k])
        out.append(float(np.linalg.norm(sm - rm) + np.linalg.norm(ss - rs)))
    return out


def _teacher(weights: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    from sowmeta.models import DemoCNN

    model = DemoCNN(len(DEMO_CLASSES))
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def _top1(model: torch.nn.Module, nhwc: np.ndarray, labels: np.ndarray) -> float:
    x = torch.from_numpy(nhwc).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        pred = model((x - 0.5) / 0.25).argmax(1).numpy()  # demo-cnn's preprocessing: mean 0.5, std 0.25
    return float((pred == labels).mean())


def test_demo_quick_report(tmp_path: Path, monkeypatch):
    import sowmeta.demo
    from sowmeta.cli.main import main
    from sowmeta.demo import DemoConfig
    from sowmeta.registry import list_bundles

    def offline(*args, **kwargs):
        raise AssertionError("the demo must not open a network connection")

    monkeypatch.setattr(socket.socket, "connect", offline)
    seen: dict[str, list[tuple[int, int]]] = {}
    run_demo = sowmeta.demo.run_demo

    def recording_run(out, *, stage, **kwargs):
        def both(name: str, done: int, total: int) -> None:
            seen.setdefault(name, []).append((done, total))
            stage(name, done, total)

        return run_demo(out, stage=both, **kwargs)

    monkeypatch.setattr(sowmeta.demo, "run_demo", recording_run)

    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    r = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert torch.get_num_threads() == threads  # the demo's single CPU thread is its own business

    # every stage reported progress, and each reached its end
    assert set(seen) == STAGES
    for name, calls in seen.items():
        assert calls[-1][0] == calls[-1][1], name

    report = json.loads((out / "report.json").read_text())
    assert report["teacher_test_accuracy"] > 0.9
    for mode in ("cc", "di"):
        assert 0.0 <= report["accuracy"][mode] <= 1.0
        assert len(report["background_distance_per_class"][mode]) == len(DEMO_CLASSES)
    assert report["accuracy"]["cc"] >= 0.75
    assert report["background_distance"]["cc"] < report["background_distance"]["di"]

    # stage 2: Scenario-A statistics recorded during training, for the weights the demo saved
    manifest = json.loads((out / "bundle" / "sowmeta.json").read_text())
    assert (manifest["source"]["scenario"], manifest["source"]["collector"]) == ("A", "during-training")
    assert all(t["kind"] == "bn-input" for t in manifest["taps"]) and manifest["taps"]
    teacher = _teacher(out / "demo-cnn.safetensors")
    xt, yt = make_demo_images(50, seed=1234)  # fresh images the teacher never saw
    assert _top1(teacher, xt.permute(0, 2, 3, 1).numpy(), yt.numpy()) > 0.9

    # stage 3: the bundle went through the local registry and synthesis used it by name
    assert report["registry_name"] in [e.name for e in list_bundles(registry=out / "registry")]

    # stage 4 and 5: recompute the report's numbers from the synthesis files
    cfg = DemoConfig.quick()
    real, real_labels = make_demo_images(cfg.synth_per_class * 4, seed=cfg.seed + 2)  # the demo's real reference set
    real_np, real_labels_np = real.permute(0, 2, 3, 1).numpy(), real_labels.numpy()
    for mode in ("cc", "di"):
        with h5py.File(out / f"synth-{mode}.h5", "r") as f:
            assert f.attrs["bundle"] == report["registry_name"] and f.attrs["mode"] == mode
            images, labels = f["images"][:] / 255.0, f["labels"][:]
        assert np.bincount(labels, minlength=len(DEMO_CLASSES)).tolist() == [cfg.synth_per_class] * len(DEMO_CLASSES)
        # the report measured float images; the file holds them rounded to 8 bits
        assert abs(_top1(teacher, images, labels) - report["accuracy"][mode]) <= 0.1
        mine = _border_distance(images, labels, real_np, real_labels_np)
        assert np.allclose(mine, report["background_distance_per_class"][mode], atol=0.01), (mode, mine)
        assert abs(np.mean(mine) - report["background_distance"][mode]) < 0.01

    # the sketch case: every class's outline became an image of that class on its own background,
    # and the images follow their outlines more closely than noise-started images of the class do
    from test_sketch import np_overlap

    sketches, sketch_labels, _ = make_demo_outlines(cfg.sketch_per_class, seed=cfg.seed + 3)
    with h5py.File(out / "synth-sketch.h5", "r") as f:
        assert f.attrs["mode"] == "cc" and json.loads(f.attrs["config"])["init"] == "images"
        images, labels = f["images"][:] / 255.0, f["labels"][:]
        assert f["snapshots"].shape[0] == 3  # the intermediate steps the sketch grid shows
    with h5py.File(out / "synth-cc.h5", "r") as f:
        cc, cc_labels = f["images"][:] / 255.0, f["labels"][:]
    assert np.array_equal(labels, sketch_labels.numpy())
    assert _top1(teacher, images, labels) >= 0.75 and report["accuracy"]["sketch"] >= 0.75
    sk = sketches.numpy() / 255.0
    mine = [np_overlap(sk[i], images[i].transpose(2, 0, 1), 1) for i in range(len(sk))]
    position = [int((labels[:i] == labels[i]).sum()) for i in range(len(labels))]  # the i-th sketch of a class meets its i-th cc image
    noise = [np_overlap(sk[i], cc[cc_labels == labels[i]][position[i]].transpose(2, 0, 1), 1) for i in range(len(sk))]
    assert abs(np.mean(mine) - report["sketch_edge_overlap"]) < 0.05  # the report measured the float images
    assert abs(np.mean(noise) - report["sketch_edge_overlap_noise"]) < 0.05
    assert report["sketch_edge_overlap"] > report["sketch_edge_overlap_noise"] + 0.05
    # and the object fills its outline: brighter inside the sketched shape than around it, as in real images
    _, _, masks = make_demo_outlines(cfg.sketch_per_class, seed=cfg.seed + 3)
    luma = images @ np.array([0.299, 0.587, 0.114])
    m = masks.numpy()
    inside = np.array([luma[i][m[i]].mean() - luma[i][~m[i]].mean() for i in range(len(m))])
    assert abs(inside.mean() - report["sketch_inside_contrast"]) < 0.02
    assert inside.mean() > 0.15 and inside.mean() > report["sketch_inside_contrast_noise"] + 0.1
    sketch_bg = _border_distance(images, labels, real_np, real_labels_np)
    assert np.mean(sketch_bg) < report["background_distance"]["di"]  # on its class's background, not a blend
    with Image.open(out / "sketch-grid.png") as grid:
        assert grid.text.get("Software") == "sowmeta" and grid.size[1] > len(DEMO_CLASSES) * 98

    # the grid: one labelled row per class, real | cc | di with 4 images each and a blank tile between, enlarged 3x
    with Image.open(out / "grid.png") as grid:
        width, height = grid.size
        assert width > 14 * 98 + 2 and height > len(DEMO_CLASSES) * 98 + 2
        assert grid.text.get("Software") == "sowmeta"
        # the last tile of the first row is the 4th di image of class 0, enlarged 3x, flush with the right border
        pixels = np.asarray(grid.convert("RGB"))
        tile = pixels[height - len(DEMO_CLASSES) * 98 : height - (len(DEMO_CLASSES) - 1) * 98 - 2, width - 98 : width - 2]
        with h5py.File(out / "synth-di.h5", "r") as f:
            di = f["images"][:][f["labels"][:] == 0][3]
        assert np.array_equal(tile, di.repeat(3, axis=0).repeat(3, axis=1))


def test_demo_classes_have_distinct_backgrounds():
    """The dataset makes the background problem measurable: class border colours differ far more than within a class."""
    x, y = make_demo_images(20, seed=0)
    means = torch.stack([border_stats(x[y == k])[0].mean(0) for k in range(len(DEMO_CLASSES))])
    within = max(float(border_stats(x[y == k])[0].std(0).norm()) for k in range(len(DEMO_CLASSES)))
    between = min(float((means[i] - means[j]).norm()) for i in range(len(means)) for j in range(i))
    assert between > 3 * within


def _shape_of(img: torch.Tensor) -> str:
    """Name the object's shape from the pixels alone: its area against its bounding box, and where its mass sits."""
    colours, counts = torch.unique(img.reshape(3, -1).T, dim=0, return_counts=True)
    counts[colours.min(dim=1).values < 0.55] = 0  # objects are one bright colour; backgrounds are darker in some channel
    mask = (img == colours[counts.argmax()][:, None, None]).all(dim=0)
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    fill = float(mask.sum() / (height * width))  # square 1, disk pi/4, triangle and cross about 1/2
    offset = float((mask.nonzero()[:, 0].float().mean() - (rows.min() + rows.max()) / 2) / height)  # > 0: mass low
    if fill > 0.95:
        return "square"
    if fill > 0.65:
        return "disk"
    return "triangle" if offset > 0.08 else "cross" if abs(offset) < 0.05 else "unknown"


def test_demo_classes_have_distinct_shapes():
    """Each class has its own object shape, recognisable from the pixels of every image."""
    x, y = make_demo_images(50, seed=5)
    assert len({c.shape for c in DEMO_CLASSES}) == len(DEMO_CLASSES)
    found = [_shape_of(img) for img in x]
    wrong = [(i, DEMO_CLASSES[int(k)].shape, f) for i, (k, f) in enumerate(zip(y, found)) if f != DEMO_CLASSES[int(k)].shape]
    assert wrong == []


def test_demo_is_reproducible(tmp_path: Path):
    """The same config gives the same teacher, images and numbers, so the committed grid and report can be remade."""
    from sowmeta.demo import DemoConfig, run_demo

    cfg = DemoConfig(train_per_class=24, test_per_class=8, epochs=1, synth_per_class=2, iterations=5)
    reports = [run_demo(tmp_path / f"run{i}", config=cfg) for i in (0, 1)]
    assert reports[0].background_distance_per_class == reports[1].background_distance_per_class
    assert reports[0].teacher_test_accuracy == reports[1].teacher_test_accuracy
    for name in ("demo-cnn.safetensors", "grid.png"):
        assert (tmp_path / "run0" / name).read_bytes() == (tmp_path / "run1" / name).read_bytes(), name
