"""Taps know their channel axis (issue 15): token sequences and channels-last maps, checked against float64 recomputation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_image_folder
from torch import nn

from sowmeta import errors as E
from sowmeta.collectors import TrainingCollector, collect
from sowmeta.models import LoadedModel
from sowmeta.models.preprocess import Preprocessing
from sowmeta.synth import SynthConfig, synthesize
from sowmeta.models.taps import resolve_taps


class TinyViT(nn.Module):
    """Patch embedding, a class token, two pre-norm transformer blocks, a LayerNorm head: [N, L, D] features."""

    def __init__(self, classes: int = 3, dim: int = 12, patch: int = 4, size: int = 12) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.1)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, then channels-last LayerNorm and MLP (as torchvision's CNBlock): an NHWC LayerNorm input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw(x).permute(0, 2, 3, 1)
        return x + self.mlp(self.norm(h)).permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    def __init__(self, classes: int = 3, dim: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, 2)
        self.stages = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


def loaded(module: nn.Module, name: str) -> LoadedModel:
    return LoadedModel(module.eval(), name, "none", 3, None, Preprocessing(crop=12))


def features_by_hand(model: nn.Module, module_name: str, x: torch.Tensor) -> torch.Tensor:
    """The input of a module, captured by a hook of the test's own."""
    seen = []
    handle = model.get_submodule(module_name).register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def images_of(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from sowmeta.data.folders import read_image

    prep = Preprocessing(crop=12).transform()
    files = sorted(p for p in folder.rglob("*.png"))
    return torch.stack([prep(read_image(f)) for f in files]), torch.tensor([int(f.parent.name.split("_")[0]) for f in files])


@pytest.mark.parametrize("prefix", [0, 1])
def test_token_taps_record_per_feature_statistics(tmp_path: Path, prefix: int):
    torch.manual_seed(0)
    model = TinyViT()
    data = write_image_folder(tmp_path / "d", classes=3, per_class=4, size=12)
    taps = resolve_taps(model, "ln-inputs")
    assert [(t.name, t.axis) for t in taps] == [("blocks.0.norm1", -1), ("blocks.0.norm2", -1), ("blocks.1.norm1", -1), ("blocks.1.norm2", -1), ("norm", -1)]
    bundle, _ = collect(loaded(model, "tiny-vit"), data, taps="ln-inputs", batch_size=5, prefix_tokens=prefix)
    x, y = images_of(data)
    for name in ("blocks.0.norm1", "blocks.1.norm2"):
        feats = features_by_hand(model, name, x).double()[:, prefix:, :]  # [N, L, D]
        assert bundle.stats[name].mean.shape == (3, 12)  # 12 features, not 17 tokens
        for k in range(3):
            mine = feats[y == k].reshape(-1, 12)
            torch.testing.assert_close(bundle.stats[name].mean[k].double(), mine.mean(0), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(bundle.stats[name].var[k].double(), mine.var(0, correction=0), rtol=1e-4, atol=1e-5)
    assert all(t.axis == -1 and t.prefix_tokens == prefix for t in bundle.manifest.taps)


def test_channels_last_layernorm_inputs_record_channels(tmp_path: Path):
    torch.manual_seed(1)
    model = TinyConvNeXt()
    data = write_image_folder(tmp_path / "d", classes=3, per_class=3, size=12)
    bundle, _ = collect(loaded(model, "tiny-convnext"), data, taps="auto", batch_size=4)
    assert [t.kind for t in bundle.manifest.taps] == ["ln-input", "ln-input"]
    x, y = images_of(data)
    feats = features_by_hand(model, "stages.1.norm", x).double()  # [N, H, W, C]: channels last
    assert bundle.manifest.taps[1].channels == 10 and feats.shape[-1] == 10 and feats.shape[1] == 6
    for k in range(3):
        mine = feats[y == k].reshape(-1, 10)
        torch.testing.assert_close(bundle.stats["stages.1.norm"].mean[k].double(), mine.mean(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bundle.stats["stages.1.norm"].var[k].double(), mine.var(0, correction=0), rtol=1e-4, atol=1e-5)


def test_block_outputs_decide_their_axis_from_the_shape(tmp_path: Path):
    vit, convnext = TinyViT(), TinyConvNeXt()
    from sowmeta.models.taps import probe

    found = probe(vit, resolve_taps(vit, "block-outputs"), 12)
    assert [(t.name, t.axis, found.channels[t.name]) for t in found.taps] == [("blocks.0", -1, 12), ("blocks.1", -1, 12)]
    found = probe(convnext, resolve_taps(convnext, "block-outputs"), 12)
    assert [(t.name, t.axis, found.channels[t.name]) for t in found.taps] == [("stages.0", 1, 10), ("stages.1", 1, 10)]
    forced = resolve_taps(vit, "blocks.0@-1,blocks.1:in@-1")
    assert [(t.name, t.axis) for t in forced] == [("blocks.0:in", -1), ("blocks.0", -1)] or [(t.name, t.axis) for t in forced] == [("blocks.0", -1), ("blocks.1:in", -1)]


def test_training_collector_on_a_vit_and_synthesis_with_token_taps(tmp_path: Path):
    torch.manual_seed(2)
    model = TinyViT()
    collector = TrainingCollector(model, num_classes=3, taps="block-outputs", prefix_tokens=1)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(6, 3, 12, 12, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
        with collector.observe(y):
            model(x)
    bundle = collector.to_bundle(architecture="tiny-vit", preprocessing=Preprocessing(crop=12), labels=["a", "b", "c"])
    assert [(t.name, t.axis, t.channels, t.prefix_tokens) for t in bundle.manifest.taps] == [("blocks.0", -1, 12, 1), ("blocks.1", -1, 12, 1)]
    bundle.save(tmp_path / "b")
    m = loaded(model, "tiny-vit")
    for mode in ("cc", "global"):
        result = synthesize(tmp_path / "b", m, classes=[0, 2], per_class=2, config=SynthConfig(mode=mode, iterations=4, batch_size=2, jitter=1))
        assert result.images().shape == (4, 3, 12, 12) and torch.isfinite(result.images()).all()
    with pytest.raises(E.SynthesisError, match="no BatchNorm"):
        synthesize(None, m, classes=[0], per_class=1, config=SynthConfig(mode="di", iterations=1))
