"""Models by name and safe weight loading; the shared CIFAR weights load exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sowmeta.errors import ModelError, WeightsError
from sowmeta.models import CifarResNet, fingerprint, list_models, load_model

from conftest import shared_path


def test_list_models_has_builtins_and_torchvision():
    names = list_models()
    assert "cifar-resnet56" in names and "resnet50" in names and "mobilenet_v2" in names
    assert list_models("cifar-resnet*") == sorted(f"cifar-resnet{d}" for d in (110, 20, 32, 44, 56))
    assert "cifar-vgg" in list_models("cifar-*")


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
    assert fingerprint(load_model("cifar-resnet20", weights=st).module) == fp  # a Path is a file too

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


# He et al. 2016, Table 6 / pytorch_resnet_cifar10: parameters of the CIFAR ResNets (millions).
_CIFAR_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


@pytest.mark.parametrize("depth", sorted(_CIFAR_PARAMS_M))
def test_cifar_resnet_architecture_facts(depth):
    from torch import nn

    m = load_model(f"cifar-resnet{depth}", weights="none")
    params = sum(p.numel() for p in m.module.parameters())
    digits = 1 if depth == 110 else 2
    assert round(params / 1e6, digits) == _CIFAR_PARAMS_M[depth]
    modules = list(m.module.modules())
    assert sum(isinstance(x, nn.Conv2d) for x in modules) == depth - 1  # + the linear layer = depth weighted layers
    assert sum(isinstance(x, nn.BatchNorm2d) for x in modules) == depth - 1
    shapes = {}
    hooks = [getattr(m.module, f"layer{i}").register_forward_hook(lambda mod, a, o, i=i: shapes.__setitem__(i, tuple(o.shape[1:]))) for i in (1, 2, 3)]
    with torch.no_grad():
        out = m.module(torch.rand(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert shapes == {1: (16, 32, 32), 2: (32, 16, 16), 3: (64, 8, 8)} and out.shape == (2, 10)
    assert m.labels[3] == "cat" and m.preprocessing.crop == 32 and m.preprocessing.resize is None


def test_cifar_resnet_shortcut_is_subsample_and_zero_pad():
    """Option A: where a block changes shape, the shortcut takes every second pixel and zero-pads channels."""
    m = load_model("cifar-resnet20", weights="none").module
    block = m.layer2[0]
    x = torch.randn(1, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (1, 32, 4, 4) and not list(block.shortcut.parameters())
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])
    assert torch.all(s[:, :8] == 0) and torch.all(s[:, 24:] == 0)
    with pytest.raises(ModelError, match="6n\\+2"):
        CifarResNet(21)


def _hub_checkpoint(name: str) -> Path:
    from torchvision import models as tvm

    url = tvm.get_model_weights(name).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1"])
def test_torchvision_named_weights_come_from_the_hub_cache(weights):
    """DEFAULT / an enum name: torchvision's checkpoint (pre-placed in $TORCH_HOME, no network), labels, transforms."""
    from torchvision import models as tvm

    torch.manual_seed(1)
    reference = tvm.mobilenet_v3_small()
    torch.save(reference.state_dict(), _hub_checkpoint("mobilenet_v3_small"))
    m = load_model("mobilenet_v3_small", weights=weights)
    assert fingerprint(m.module) == fingerprint(reference.eval())
    assert m.num_classes == 1000 and m.labels[0] == "tench" and m.weights == "IMAGENET1K_V1"  # DEFAULT is recorded as what it means
    p = m.preprocessing
    assert (p.crop, p.resize, p.mean, p.std) == (224, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert p.source == "torchvision:MobileNet_V3_Small_Weights.IMAGENET1K_V1"


def test_tampered_hub_checkpoint_is_never_unpickled(capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, _hub_checkpoint("mobilenet_v3_small"))
    with pytest.raises(WeightsError, match="objects other than tensors"):
        load_model("mobilenet_v3_small", weights="DEFAULT")
    assert "pwned" not in capsys.readouterr().out


def test_torchvision_architecture_with_a_fine_tuned_weights_file(tmp_path):
    """A torchvision architecture with a 10-class checkpoint: the head's size sets num_classes."""
    from torchvision import models as tvm

    torch.manual_seed(2)
    tuned = tvm.mobilenet_v3_small(num_classes=10).eval()
    f = tmp_path / "tuned.safetensors"
    save_file(tuned.state_dict(), str(f))
    m = load_model("mobilenet_v3_small", weights=str(f))
    assert m.num_classes == 10 and m.labels is None
    assert fingerprint(m.module) == fingerprint(tuned)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m.module(x), tuned(x))


def test_factory_must_return_a_module(tmp_path, monkeypatch):
    (tmp_path / "fake_factories.py").write_text("def not_a_model():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match="returned int, not a torch.nn.Module"):
        load_model("fake_factories:not_a_model", weights="none")
    with pytest.raises(WeightsError, match="no DEFAULT weights"):
        load_model("conftest:tiny_net", weights="DEFAULT")


def test_weights_a_manifest_makes_sowmeta_fetch_are_named_first():
    """fetch_note: the line before a download the manifest decides, and no line where nothing is fetched."""
    from sowmeta.models import fetch_note

    assert "torchvision's download site" in fetch_note("resnet18", "DEFAULT")
    assert "torchvision's download site" in fetch_note("resnet18", "IMAGENET1K_V1")
    assert "the Hugging Face Hub" in fetch_note("cifar-resnet20", "hf://org/net@abc/model.safetensors")
    assert "the Hugging Face Hub" in fetch_note("timm:vit_tiny_patch16_224", "DEFAULT")
    for arch, weights in (("cifar-resnet20", "DEFAULT"), ("cifar-resnet20", "resnet20.safetensors"), ("resnet18", None), ("resnet18", "none")):
        assert fetch_note(arch, weights) is None, (arch, weights)
