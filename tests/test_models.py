"""Models by name and safe weight loading; the shared CIFAR weights load exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sowmeta.errors import ModelError, WeightsError
from sowmeta.models import fingerprint, list_models, load_model

from conftest import shared_path


def test_list_models_has_builtins_and_torchvision():
    names = list_models()
    assert "cifar-resnet56" in names and "resnet50" in names and "mobilenet_v2" in names
    assert list_models("cifar-*") == sorted(f"cifar-resnet{d}" for d in (110, 20, 32, 44, 56))


def test_torchvision_model_without_weights_has_preprocessing_and_labels():
    m = load_model("resnet18", weights="none")
    assert m.preprocessing.crop == 224 and m.preprocessing.resize == 256
    assert m.num_classes == 1000 and m.labels[0] == "tench"
    assert not m.module.training


def test_unknown_names_and_factories():
    with pytest.raises(ModelError, match="unknown model"):
        load_model("resnet-9000", weights="none")
    with pytest.raises(ModelError, match="cannot import factory"):
        load_model("no_such_pkg.mod:build", weights="none")
    m = load_model("conftest:tiny_net", weights="none")
    assert m.num_classes == 4


@pytest.mark.parametrize("depth", [20, 56])
def test_shared_cifar_weights_load_exactly(depth):
    path = shared_path("models", "cifar10", f"resnet{depth}.safetensors")
    m = load_model(f"cifar-resnet{depth}", weights=str(path))
    state = load_file(str(path))
    own = m.module.state_dict()
    for k, v in state.items():
        assert torch.equal(own[k], v), k
    data = np.load(shared_path("data", "cifar10", "test-lossless-head.npz"))
    x = m.preprocessing.normalize(torch.tensor(data["x"]).float() / 255)
    with torch.no_grad():
        acc = (m.module(x).argmax(1) == torch.tensor(data["y"])).float().mean().item()
    assert acc == pytest.approx({20: 0.917, 56: 0.933}[depth], abs=0.002)


def test_weights_files_are_read_safely(tmp_path):
    m = load_model("cifar-resnet20", weights="none")
    st = tmp_path / "w.safetensors"
    save_file(m.module.state_dict(), str(st))
    pt = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.module.state_dict().items()}}, pt)
    fp = fingerprint(m.module)
    assert fingerprint(load_model("cifar-resnet20", weights=str(st)).module) == fp
    assert fingerprint(load_model("cifar-resnet20", weights=str(pt)).module) == fp

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_model("cifar-resnet20", weights=str(bad))
    with pytest.raises(WeightsError, match="do not fit"):
        load_model("cifar-resnet56", weights=str(st))
    with pytest.raises(WeightsError, match="does not exist"):
        load_model("cifar-resnet20", weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match="no downloadable weights"):
        load_model("cifar-resnet20", weights="DEFAULT")


def test_fingerprint_is_sha256_of_canonical_bytes():
    import hashlib

    net = torch.nn.Linear(2, 2)
    state = net.state_dict()
    h = hashlib.sha256()
    for k in ("bias", "weight"):
        t = state[k]
        h.update(f"{k}\0float32\0{','.join(map(str, t.shape))}\0".encode())
        h.update(t.numpy().tobytes())
    assert fingerprint(net) == "sha256:" + h.hexdigest()
