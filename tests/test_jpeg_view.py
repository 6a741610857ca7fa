"""The differentiable JPEG codec (sowmeta/synth/jpeg_view.py) against Pillow's libjpeg, and its use in the engine."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import tiny_net
from PIL import Image

from sowmeta.cli.main import main
from sowmeta.errors import ConfigError
from sowmeta.data.jpeg_quality import ijg_tables
from sowmeta.models.preprocess import Preprocessing
from sowmeta.synth.config import SynthConfig
from sowmeta.synth.engine import Inverter, TapTarget
from sowmeta.synth.jpeg_view import jpeg_view, soft_round
from sowmeta.models.taps import resolve_taps

_PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def _photo_like(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour fields with some edges: N x H x W x 3 uint8 (JPEG's intended content, not white noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, h // 6), max(2, w // 6), generator=g)
    x = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    x = x + 0.08 * torch.rand(n, 3, h, w, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _pillow(images: np.ndarray, quality: int, subsampling: str) -> np.ndarray:
    out = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=quality, subsampling=_PIL_SUBSAMPLING[subsampling])
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return np.stack(out).astype(np.float64)


def test_ijg_tables_are_the_ones_libjpeg_writes():
    for quality in (1, 10, 49, 50, 75, 95, 100):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, "JPEG", quality=quality)
        tables = Image.open(buf).quantization
        assert ijg_tables(quality) == (tuple(tables[0]), tuple(tables[1])), quality


@pytest.mark.parametrize("quality,subsampling", [(75, "4:2:0"), (75, "4:4:4"), (90, "4:2:2"), (30, "4:2:0")])
@pytest.mark.parametrize("size", [(32, 32), (27, 41)])
def test_the_view_is_pillows_encode_decode_up_to_its_integer_arithmetic(quality: int, subsampling: str, size: tuple[int, int]):
    """Within about one level of libjpeg on average, where the encoding itself moves pixels by several."""
    images = _photo_like(24, *size)
    want = _pillow(images, quality, subsampling)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255
    got = (jpeg_view(x, quality, subsampling) * 255).permute(0, 2, 3, 1).numpy()
    assert got.shape == want.shape
    moved = np.abs(images - want).mean()
    off = np.abs(got - want).mean()
    assert off < 1.5 and off < moved / 3, (off, moved)
    assert np.quantile(np.abs(got - want), 0.99) < 13  # a coefficient rounded the other way: up to a step / 4


def test_high_quality_4_4_4_changes_almost_nothing():
    images = _photo_like(8, 32, 32, seed=3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255
    assert (jpeg_view(x, 100, "4:4:4") - x).abs().max() * 255 < 2.5  # quantization steps of 1: at most ~2 levels moved


def test_values_stay_in_range_and_gradients_are_finite_and_nonzero():
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = jpeg_view(x, 75)
    assert y.min() >= 0 and y.max() <= 1
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_soft_round_is_round_forward_with_the_cubic_gradient():
    z = torch.tensor([-1.7, -0.3, 0.0, 0.2, 0.49, 1.5001, 2.9], dtype=torch.float64, requires_grad=True)
    y = soft_round(z)
    assert torch.equal(y.detach(), torch.round(z.detach()))
    y.sum().backward()
    r = np.round(z.detach().numpy())
    np.testing.assert_allclose(z.grad.numpy(), 3 * (z.detach().numpy() - r) ** 2, rtol=1e-12)


def test_bad_settings_are_config_errors():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="1-100"):
        jpeg_view(x, 0)
    with pytest.raises(ConfigError, match="subsampling"):
        jpeg_view(x, 75, "4:1:1")
    with pytest.raises(ConfigError, match="RGB"):
        jpeg_view(torch.rand(1, 1, 8, 8), 75)
    with pytest.raises(ConfigError, match="jpeg_quality"):
        SynthConfig(jpeg_quality=101)
    with pytest.raises(ConfigError, match="jpeg_quality"):
        SynthConfig(jpeg_quality=75.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="jpeg_subsampling"):
        SynthConfig(jpeg_quality=75, jpeg_subsampling="420")


@pytest.mark.parametrize("args", [["--jpeg-quality", "101"], ["--jpeg-subsampling", "4:4:4"]])
def test_the_cli_rejects_a_bad_encoding(tmp_path, args: list[str]):
    r = CliRunner().invoke(main, ["synthesize", "--mode", "di", "--model", "resnet18", "--out", str(tmp_path / "s.h5"), *args])
    assert r.exit_code != 0 and "--jpeg-quality" in r.output and not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("wrap", [True, False])
def test_the_engine_matches_statistics_on_the_encoded_images_and_ce_on_the_images(wrap: bool):
    """With jpeg_quality, each step's forward holds the encoded batch (whose moments meet the statistics) and then the
    batch itself (whose logits meet the CE); the result is the image, not its encoding. Without jitter wrap-around
    both are the same window of the canvas, the encoded one with the encoded image at its centre (the codec's
    8 x 8 blocks stay on the image's own grid)."""
    model = tiny_net()
    prep = Preprocessing(crop=16)
    mean, std = torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1)
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    taps = resolve_taps(model, "bn-inputs")
    init = torch.from_numpy(_photo_like(2, 16, 16, seed=5)).permute(0, 3, 1, 2).float() / 255
    labels = torch.tensor([0, 1])
    view = jpeg_view(init, 40, "4:2:0")
    assert (view - init).abs().mean() > 0.01  # the two inputs differ
    jitter = 0 if wrap else 3
    if not wrap:  # the first step's window, drawn as the engine draws it from the run's seed
        draw = random.Random(0)
        dy, dx = draw.randint(0, 6), draw.randint(0, 6)
        assert (dy, dx) != (3, 3)
        canvas = torch.from_numpy(np.pad(init.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode="reflect"))
        coded = canvas.clone()
        coded[..., 3:19, 3:19] = view
        view, image_view = coded[..., dy : dy + 16, dx : dx + 16], canvas[..., dy : dy + 16, dx : dx + 16]
    else:
        image_view = init
    # targets: the encoded batch's own first-tap moments, so the statistics term is 0 exactly when it reads the encoded half
    with torch.no_grad():
        inner: dict[str, torch.Tensor] = {}
        hooks = [dict(model.named_modules())[t.name].register_forward_pre_hook(
            lambda m, a, n=t.name: inner.__setitem__(n, a[0])) for t in taps]
        model((view - mean) / std)
        for h in hooks:
            h.remove()
    targets = [TapTarget(t, inner[t.name].mean(dim=(0, 2, 3))[None], inner[t.name].var(dim=(0, 2, 3), unbiased=False)[None]) for t in taps]
    cfg = SynthConfig(batch_size=2, iterations=1, lr=1e-9, jitter=jitter, jitter_wrap=wrap, flip=False, alpha_tv=0, init="images", init_noise=0.0,
                      jpeg_quality=40)
    seen.clear()
    inv = Inverter(model, targets, prep, cfg)
    result = inv.run(labels, torch.tensor([0, 0]), init, seed=0)
    first = seen[0] * std + mean
    torch.testing.assert_close(first[:2], view, atol=1e-5, rtol=0)
    torch.testing.assert_close(first[2:], image_view, atol=1e-5, rtol=0)
    assert result.terms["stats"] < 1e-6  # moments of the encoded half, and of it alone
    with torch.no_grad():
        ce_image = F.cross_entropy(model((image_view - mean) / std), labels)
    assert abs(result.terms["ce"] - float(ce_image)) < 1e-5  # CE of the image itself
    torch.testing.assert_close(result.images, init, atol=1e-5, rtol=0)
    handle.remove()
