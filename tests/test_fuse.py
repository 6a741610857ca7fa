"""fuse_bn: an equivalent model with every BatchNorm folded into its convolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from sowmeta.errors import ModelError
from sowmeta.fuse import fuse_bn
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
