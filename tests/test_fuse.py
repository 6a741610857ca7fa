"""fuse_bn: an equivalent model with every BatchNorm folded into its convolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from sowmeta.errors import ModelError
from sowmeta.models.fuse import fuse_bn
from sowmeta.models import CifarResNet

from conftest import randomize_bn, tiny_net


@pytest.mark.parametrize(
    "build,size",
    [
        (lambda: tiny_net(), 16),
        (lambda: CifarResNet(20), 32),
        (lambda: tvm.resnet18(num_classes=10), 64),
        (lambda: tvm.mobilenet_v2(num_classes=10), 64),
    ],
    ids=["tiny", "cifar-resnet20", "resnet18", "mobilenet_v2"],
)
def test_fused_equals_original(build, size):
    torch.manual_seed(0)
    model = randomize_bn(build())
    x = torch.rand(3, 3, size, size)
    fused = fuse_bn(model, torch.rand(1, 3, size, size))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    with torch.no_grad():
        ref = model.double()(x.double())
        out = fused(x)
    rel = (out.double() - ref).norm() / ref.norm()
    assert rel < 1e-5, rel
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()), "original untouched"


def test_preactivation_bn_cannot_be_fused():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3))
    with pytest.raises(ModelError, match="not the output of a Conv2d"):
        fuse_bn(model, torch.rand(1, 3, 8, 8))


def test_conv_bias_is_folded_and_bn_free_models_are_copied():
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 5, 3, bias=True), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 2, 1)))
    fused = fuse_bn(model, torch.rand(1, 3, 8, 8))
    assert isinstance(fused[1], nn.Identity) and fused[0].bias is not None
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        bn = model[1]
        conv_out = model[0](x).double()
        expected = (conv_out - bn.running_mean.double().view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.double().view(1, -1, 1, 1) + bn.eps)
        expected = expected * bn.weight.double().view(1, -1, 1, 1) + bn.bias.double().view(1, -1, 1, 1)
        torch.testing.assert_close(fused[0](x).double(), expected, rtol=1e-5, atol=1e-5)
    plain = nn.Sequential(nn.Conv2d(3, 2, 1))
    copy = fuse_bn(plain)
    assert copy is not plain and torch.equal(copy[0].weight, plain[0].weight)


def test_conv_output_feeding_two_layers_is_refused():
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.side = nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + self.side(y)

    with pytest.raises(ModelError, match="also feeds another layer"):
        fuse_bn(Fork(), torch.rand(1, 3, 8, 8))


def test_timm_batchnorm_act_keeps_its_activation():
    """timm's BatchNormAct2d normalizes, then applies its activation: folding must keep the activation."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = randomize_bn(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)).eval()
    assert any(type(m).__name__ == "BatchNormAct2d" for m in model.modules())
    fused = fuse_bn(model, torch.rand(1, 3, 64, 64))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.double()(x.double())
        out = fused.double()(x.double())
    assert (out - ref).norm() / ref.norm() < 1e-5  # the folded weights are computed in float32
    assert sum(isinstance(m, nn.ReLU6) for m in fused.modules()) == sum(isinstance(m, nn.ReLU6) for m in model.modules())


def test_a_fused_timm_model_synthesizes(tmp_path):
    """The fused model's taps are convolution outputs that the kept (in timm, in-place) activation reads next:
    collection and synthesis through them work, with gradients (an in-place activation would overwrite the tap)."""
    timm = pytest.importorskip("timm")
    from conftest import write_image_folder

    from sowmeta import collect, synthesize
    from sowmeta.models import LoadedModel
    from sowmeta.models.preprocess import Preprocessing
    from sowmeta.synth import SynthConfig

    torch.manual_seed(0)
    fused = fuse_bn(randomize_bn(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3)).eval(), torch.rand(1, 3, 32, 32))
    assert not any(getattr(m, "inplace", False) for m in fused.modules())
    model = LoadedModel(fused, "timm:tf_efficientnet_lite0", None, 3, None, Preprocessing(crop=32))
    collect(model, write_image_folder(tmp_path / "data", classes=3, per_class=2, size=32), out=tmp_path / "b", batch_size=6)
    result = synthesize(tmp_path / "b", model, classes=[0, 1], per_class=1,
                        config=SynthConfig.preset("imagenet", iterations=2, jitter=2, batch_size=2, mixed=True, check_fingerprint=False))
    assert result.uint8.shape == (2, 3, 32, 32)


def test_batchnorm_with_an_unknown_forward_is_refused():
    class Scaled(nn.BatchNorm2d):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(nn.Conv2d(3, 4, 3), Scaled(4)).eval()
    with pytest.raises(ModelError, match="does more than normalize"):
        fuse_bn(model, torch.rand(1, 3, 8, 8))
