"""Tap resolution by presets, names and globs; hooks are always removed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sowmeta.errors import TapError
from sowmeta.models.taps import probe_channels, resolve_taps, tap_hooks

from conftest import tiny_net


def test_presets_name_modules_in_order():
    m = tiny_net()
    bn = resolve_taps(m, "bn-inputs")
    assert [(t.name, t.position, t.kind) for t in bn] == [("bn1", "in", "bn-input"), ("bn2", "in", "bn-input")]
    conv = resolve_taps(m, "conv-outputs")
    assert [t.name for t in conv] == ["conv1", "conv2", "conv3"]


def test_explicit_globs_and_positions():
    m = tiny_net()
    taps = resolve_taps(m, ["conv*:out", "fc:in"])
    assert [t.name for t in taps] == ["conv1", "conv2", "conv3", "fc:in"]
    assert taps[-1].kind == "input"
    assert probe_channels(m, taps, 8) == {"conv1": 6, "conv2": 12, "conv3": 12, "fc:in": 12}


def test_bad_specs_raise_typed_errors():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(TapError, match="no BatchNorm"):
        resolve_taps(m, "bn-inputs")
    with pytest.raises(TapError, match="matches no module"):
        resolve_taps(m, "nope*")
    with pytest.raises(TapError, match="position"):
        resolve_taps(m, "0:middle")


def test_hook_sees_the_module_input_and_is_removed_on_error():
    m = tiny_net()
    seen = {}

    def grab(tap, x):
        seen[tap.name] = x

    expected = {}
    h = m.bn1.register_forward_pre_hook(lambda mod, a: expected.__setitem__("bn1", a[0]))
    with pytest.raises(RuntimeError):
        with tap_hooks(m, resolve_taps(m, "bn-inputs"), grab):
            m(torch.rand(2, 3, 8, 8))
            raise RuntimeError("boom")
    h.remove()
    assert seen["bn1"] is expected["bn1"]
    assert all(not mod._forward_pre_hooks and not mod._forward_hooks for mod in m.modules())


def test_non_tensor_output_is_a_tap_error():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            return self.pair(x)[0]

    net = Net()
    with pytest.raises(TapError, match="not a tensor"):
        with tap_hooks(net, resolve_taps(net, "pair"), lambda t, x: None):
            net(torch.rand(1, 3, 4, 4))


def test_explicit_positions_kinds_and_comma_strings():
    m = tiny_net()
    taps = resolve_taps(m, "bn2:out, bn1:in,fc,conv1:in")
    assert [(t.name, t.module, t.position, t.kind) for t in taps] == [
        ("conv1:in", "conv1", "in", "input"),
        ("bn1", "bn1", "in", "bn-input"),  # a BatchNorm's input keeps the preset's name
        ("bn2", "bn2", "out", "output"),
        ("fc", "fc", "out", "output"),
    ]
    with pytest.raises(TapError, match="empty tap specification"):
        resolve_taps(m, " , ")
    with pytest.raises(TapError, match="'bn1:in' and 'bn1:out' would both be stored as 'bn1'"):
        resolve_taps(m, ["bn*:in", "bn1:out"])


def test_linear_output_is_an_n_by_c_tap():
    """An N x C feature (a Linear's output) is one sample per image and channel."""
    m = tiny_net()
    taps = resolve_taps(m, ["fc", "fc:in"])
    seen = {}
    with torch.no_grad(), tap_hooks(m, taps, lambda t, x: seen.__setitem__(t.name, x)):
        logits = m(torch.rand(3, 3, 8, 8))
    assert seen["fc"] is logits and seen["fc"].shape == (3, 4) and seen["fc:in"].shape == (3, 12)
    assert probe_channels(m, taps, 8) == {"fc:in": 12, "fc": 4}
