"""Jitter without wrap-around (sowmeta/synth/canvas.py): the canvas against numpy's mirror padding, the window
against plain slicing, its gradients, and the engine's use of it (the model's view, the result, the errors)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from conftest import tiny_net
from sowmeta.errors import ConfigError
from sowmeta.models.preprocess import Preprocessing
from sowmeta.synth import Inverter, SynthConfig
from sowmeta.synth.canvas import Canvas


def test_the_canvas_mirrors_the_images_into_its_margin_and_gives_them_back_exactly():
    x = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    canvas = Canvas.around(x, 3)
    padded = canvas.pad(x)
    np.testing.assert_array_equal(padded.numpy(), np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode="reflect"))
    assert torch.equal(canvas.image(padded), x)
    assert Canvas.around(x, 0).pad(x) is x and Canvas.around(x, 0).image(x) is x


def test_a_window_is_a_contiguous_block_of_the_canvas_never_wrapped_and_covers_every_shift():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float64).view(2, 1, 8, 8)
    canvas = Canvas.around(x, 2)
    full = canvas.pad(x)
    rng, twin = random.Random(7), random.Random(7)
    shifts = set()
    for _ in range(200):
        got = canvas.window(full, rng)
        dy, dx = twin.randint(0, 4), twin.randint(0, 4)
        np.testing.assert_array_equal(got.numpy(), full.numpy()[..., dy : dy + 8, dx : dx + 8])
        shifts.add((dy - 2, dx - 2))
    assert shifts == {(a, b) for a in range(-2, 3) for b in range(-2, 3)}  # every shift up to the margin, both ways


def test_window_and_with_image_pass_gradients_to_the_canvas_and_the_new_centre():
    x = torch.rand(1, 3, 6, 6)
    canvas = Canvas.around(x, 2)
    full = canvas.pad(x).requires_grad_(True)
    centre = torch.rand(1, 3, 6, 6, requires_grad=True)
    view = canvas.window(canvas.with_image(full, centre), random.Random(0))
    view.square().sum().backward()
    assert full.grad is not None and centre.grad is not None
    assert float(centre.grad.abs().sum()) > 0 and float(full.grad.abs().sum()) > 0
    assert float(full.grad[..., 2:8, 2:8].abs().sum()) == 0  # the replaced centre takes no gradient from the old one


def test_jitter_without_wrap_needs_images_larger_than_the_jitter():
    with pytest.raises(ConfigError, match="jitter 8 px without wrap-around needs images larger than that.*--jitter-wrap"):
        Canvas.around(torch.zeros(1, 3, 8, 8), 8)
    with pytest.raises(ConfigError, match="jitter_wrap"):
        SynthConfig(jitter_wrap="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("wrap", [True, False])
def test_the_model_sees_the_image_shifted_with_real_pixels_around_it_and_the_result_is_the_image(wrap: bool):
    """Without wrap every view is a window of the canvas (the image mirrored at first), never an edge next to the
    opposite edge; with wrap (DeepInversion's roll) views do show that. Either way the result has the image's size."""
    model = tiny_net()
    prep = Preprocessing(crop=16)
    mean, std = torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1)
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    init = torch.rand(2, 3, 16, 16)
    cfg = SynthConfig(batch_size=2, iterations=12, lr=1e-9, jitter=3, jitter_wrap=wrap, flip=False, alpha_tv=0, init="images", init_noise=0.0)
    result = Inverter(model, [], prep, cfg).run(torch.tensor([0, 1]), torch.tensor([0, 0]), init, seed=3)
    handle.remove()
    canvas = np.pad(init.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode="reflect")
    windows = {(dy, dx): canvas[..., dy : dy + 16, dx : dx + 16] for dy in range(7) for dx in range(7)}
    views = [(v * std + mean).numpy() for v in seen[:-1]]  # the last forward judges the result itself
    matched = [any(np.allclose(v, w, atol=1e-5) for w in windows.values()) for v in views]
    assert all(matched) if not wrap else not all(matched)
    torch.testing.assert_close(result.images, init, atol=1e-5, rtol=0)
