"""Sketches (sowmeta/sketch.py) against numpy computations, and synthesis that starts exactly from a sketch."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from sowmeta.collectors import collect
from sowmeta.demo.data import DEMO_CLASSES, make_demo_outlines
from sowmeta.errors import DataError
from sowmeta.synth.sketch import edge_overlap, edge_sketch, outline, shade_enclosed, sobel_magnitude
from sowmeta.synth import SynthConfig, synthesize

from test_synth import CROP, loaded


def np_sobel(images: np.ndarray) -> np.ndarray:
    """|Sobel| of the luma of N x 3 x H x W images in [0, 1], borders replicated, by explicit shifts."""
    luma = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    p = np.pad(luma, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = luma.shape[1:]
    at = lambda dy, dx: p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]  # noqa: E731
    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return np.sqrt(gx**2 + gy**2)


def np_overlap(sketch: np.ndarray, image: np.ndarray, tolerance: int) -> float:
    """One pair: sketch edges (Sobel >= 1) near the image's strongest as-many Sobel pixels (stable ranks)."""
    s, m = np_sobel(sketch[None])[0], np_sobel(image[None])[0]
    lines = s >= 1.0
    k = int(lines.sum())
    order = np.argsort(-m.ravel(), kind="stable")
    edges = np.zeros(m.size, dtype=bool)
    edges[order[:k]] = True
    edges = edges.reshape(m.shape)
    near = np.zeros_like(edges)
    for dy in range(-tolerance, tolerance + 1):
        for dx in range(-tolerance, tolerance + 1):
            shifted = np.zeros_like(edges)
            h, w = edges.shape
            shifted[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = edges[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
            near |= shifted
    return float((lines & near).sum() / k)


def test_sobel_matches_numpy():
    x = torch.rand(3, 3, 9, 11, dtype=torch.float64)
    np.testing.assert_allclose(sobel_magnitude(x).numpy(), np_sobel(x.numpy()), rtol=1e-5, atol=1e-5)


def test_outline_of_a_square_is_its_border():
    m = torch.zeros(1, 7, 7, dtype=torch.bool)
    m[0, 1:6, 2:5] = True
    want = np.zeros((7, 7), dtype=bool)
    want[1:6, 2:5] = True
    want[2:5, 3:4] = False  # the pixels whose four neighbours are all inside
    assert np.array_equal(outline(m)[0].numpy(), want)


def _np_enclosed(paper: np.ndarray) -> np.ndarray:
    """Paper pixels not 4-connected to the border through paper: a breadth-first search (scipy-free)."""
    h, w = paper.shape
    seen = np.zeros_like(paper)
    todo = [(y, x) for y in range(h) for x in range(w) if (y in (0, h - 1) or x in (0, w - 1)) and paper[y, x]]
    for y, x in todo:
        seen[y, x] = True
    while todo:
        y, x = todo.pop()
        for v, u in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= v < h and 0 <= u < w and paper[v, u] and not seen[v, u]:
                seen[v, u] = True
                todo.append((v, u))
    return paper & ~seen


def test_shading_fills_exactly_what_the_lines_enclose():
    sketches, _, masks = make_demo_outlines(3, seed=5)
    shaded = shade_enclosed(sketches, shade=0.5)
    assert shaded.dtype == torch.uint8 and shaded.shape == sketches.shape
    for i in range(len(sketches)):
        inside = _np_enclosed(sketches[i, 0].numpy() == 255)
        assert np.array_equal(inside, (masks[i] & ~outline(masks[i : i + 1])[0]).numpy())  # the shape without its line
        got = shaded[i].numpy()
        assert np.all(got[:, inside] == 128) and np.array_equal(got[:, ~inside], sketches[i].numpy()[:, ~inside])
        ground = shade_enclosed(sketches[i : i + 1], shade=None, ground=0.2)[0].numpy()  # white figure, grey ground
        line = sketches[i, 0].numpy() == 0
        assert np.all(ground[:, inside] == 255) and np.all(ground[:, line] == 0) and np.all(ground[:, ~inside & ~line] == 51)
    # an open line encloses nothing, nor do lines that close a region only with the image's border
    from sowmeta.synth.sketch import to_sketch

    open_line = torch.zeros(1, 12, 12, dtype=torch.bool)
    open_line[0, 2:9, 5] = True
    corner = torch.zeros(1, 12, 12, dtype=torch.bool)
    corner[0, 4, :5] = corner[0, :5, 4] = True
    for lines in (open_line, corner):
        assert torch.equal(shade_enclosed(to_sketch(lines)), to_sketch(lines))
    with pytest.raises(DataError, match="grey level"):
        shade_enclosed(sketches, shade=2.0)
    with pytest.raises(DataError, match="ground is a grey level"):
        shade_enclosed(sketches, ground=-0.1)


def test_edge_sketch_draws_the_strongest_edges_black_on_white():
    x = torch.rand(2, 3, 10, 10)
    s = edge_sketch(x, density=0.2)
    assert s.dtype == torch.uint8 and set(s.unique().tolist()) == {0, 255}
    black = (s[:, 0] == 0).numpy()
    assert black.reshape(2, -1).sum(1).tolist() == [20, 20]
    mag = np_sobel(x.numpy())
    for i in range(2):  # every black pixel is at least as strong as every white one
        assert mag[i][black[i]].min() >= mag[i][~black[i]].max() - 1e-6
    with pytest.raises(DataError, match="fraction in"):
        edge_sketch(x, density=1.5)


def test_edge_overlap_matches_numpy_and_its_ends():
    sketches, _, _ = make_demo_outlines(2, seed=1)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(len(sketches), 3, 32, 32, generator=g)
    for t in (0, 1):
        got = edge_overlap(sketches, images, tolerance=t)
        want = [np_overlap(sketches[i].numpy() / 255.0, images[i].double().numpy(), t) for i in range(len(sketches))]
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    assert torch.equal(edge_overlap(sketches, sketches.float() / 255), torch.ones(len(sketches)))  # a sketch follows itself
    with pytest.raises(DataError, match="do not pair up"):
        edge_overlap(sketches, images[:1])


@pytest.mark.parametrize("param, wrap", [("pixel", True), ("fourier", True), ("pixel", False), ("fourier", False)])
def test_synthesis_from_sketches_starts_exactly_from_the_sketch(image_folder: Path, tmp_path: Path, param: str, wrap: bool):
    """With no added noise, one step of a vanishing learning rate leaves each image equal to its sketch, pixel for pixel."""
    bundle, _ = collect(loaded(), image_folder, batch_size=5)
    bundle_dir = bundle.save(tmp_path / "bundle") or tmp_path / "bundle"
    sketches, labels, _ = make_demo_outlines(2, size=CROP, seed=4)
    folder = tmp_path / "sketches"
    files = {}
    for i, (img, k) in enumerate(zip(sketches, labels.tolist())):
        if k >= 3:  # the tiny bundle has 3 classes
            continue
        path = folder / str(k) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)
        files.setdefault(k, []).append(path)
    cfg = SynthConfig(iterations=1, batch_size=2, lr=1e-9, alpha_cc=1.0, jitter=1, jitter_wrap=wrap, init="images", init_noise=0.0, param=param)
    out = tmp_path / "s.h5"
    synthesize(bundle_dir, loaded(), classes=[0, 1, 2], per_class=2, config=cfg, out=out, init_images=folder)
    with h5py.File(out, "r") as f:
        images, got_labels = f["images"][:], f["labels"][:]
    for k in range(3):
        want = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(files[k])])  # the class's sketches in file order
        assert np.array_equal(images[got_labels == k], want), DEMO_CLASSES[k].name
