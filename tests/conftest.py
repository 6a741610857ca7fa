"""Shared fixtures: tiny models, generated image folders, isolated caches, the ../shared data."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from torch import nn

from sowmeta.env import shared_dir

if TYPE_CHECKING:
    from sowmeta.models import LoadedModel

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cache and registry goes to a temporary directory; nothing touches the network."""
    base = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SOWMETA_CACHE", str(base / "sowmeta"))
    monkeypatch.setenv("SOWMETA_REGISTRY", str(base / "registry"))
    monkeypatch.setenv("HF_HOME", str(base / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(base / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(base / "torch"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


class TinyNet(nn.Module):
    """Conv-BN-ReLU x2, a BN-free conv, global pooling and a linear head: every tap kind in a few layers."""

    def __init__(self, num_classes: int = 4, width: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        return self.fc(x.mean(dim=(2, 3)))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def tiny_net(num_classes: int = 4, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return randomize_bn(TinyNet(num_classes), seed)


def loaded_tiny(crop: int = 12, classes: int = 4, weights: str | None = None) -> LoadedModel:
    """``tiny_net`` as ``load_model`` would give it: the model the collector and CLI tests use."""
    from sowmeta.models import LoadedModel
    from sowmeta.models.preprocess import Preprocessing

    return LoadedModel(tiny_net(classes), "conftest:tiny_net", weights, classes, None, Preprocessing(crop=crop))


@pytest.fixture
def tiny_model() -> TinyNet:
    return tiny_net()


def write_image_folder(root: Path, classes: int = 3, per_class: int = 5, size: int = 12, seed: int = 0, fmt: str = "png") -> Path:
    """root/c<k>/img<i>.png with a class-dependent colour cast, so class statistics differ."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(classes):
        d = root / f"{k}_c{k}"
        d.mkdir(parents=True, exist_ok=True)
        cast = rng.uniform(0, 255, size=3)
        for i in range(per_class):
            arr = np.clip(rng.normal(cast, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"img{i:03d}.{fmt}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "data")


# --- ../shared --------------------------------------------------------------------------


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test with the reason."""
    p = shared_dir().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (set SOWMETA_SHARED to the shared data folder)")
    return p


@pytest.fixture(scope="session")
def cifar_test_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 20 images of each class of the CIFAR-10 JPEG test set, as an ImageFolder."""
    z = shared_dir() / "data" / "cifar10" / "test.zip"
    if not z.exists():
        pytest.skip(f"needs {z} (set SOWMETA_SHARED to the shared data folder)")
    root = tmp_path_factory.mktemp("cifar") / "test"
    with zipfile.ZipFile(z) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))
        taken: dict[str, int] = {}
        for n in names:
            cls = n.split("/")[-2]
            if taken.get(cls, 0) < 20:
                taken[cls] = taken.get(cls, 0) + 1
                target = root / cls / Path(n).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(n))
    return root


# --- registry (issue 3): tiny bundles, isolated HF caches, a Hub-compatible server ------
from registry_fixtures import *  # noqa: E402, F401, F403
