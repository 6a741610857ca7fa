"""Fold every BatchNorm into the convolution that feeds it: the paper's "inference-optimized" model."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ModelError

__all__ = ["fuse_bn"]


def _fold(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    """``conv`` followed by ``bn`` (eval mode) as one convolution (torch's ``fuse_conv_bn_weights``)."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    fused = copy.deepcopy(conv)
    ones = torch.ones_like(bn.running_var)
    gamma = bn.weight if bn.weight is not None else ones
    beta = bn.bias if bn.bias is not None else torch.zeros_like(ones)
    fused.weight, fused.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, gamma, beta)
    return fused


def _after_norm(name: str, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """What stands in for ``bn`` once its normalization is folded: nothing for a stock BatchNorm, the
    activation (and dropout) of timm's ``BatchNormAct2d`` (EfficientNet, RegNet, ...); a subclass whose
    forward is not known is refused rather than guessed."""
    forward = type(bn).forward
    if forward is nn.modules.batchnorm._BatchNorm.forward:
        return nn.Identity()
    if forward.__qualname__ == "BatchNormAct2d.forward" and forward.__module__.startswith("timm."):
        # the activation then reads the convolution's output, which a tap records for synthesis: it must not overwrite it
        if getattr(bn.act, "inplace", False):
            bn.act.inplace = False  # type: ignore[union-attr]
        return nn.Sequential(bn.drop, bn.act)  # type: ignore[arg-type]
    raise ModelError(
        f"cannot fuse {name}: {type(bn).__name__} does more than normalize and its forward is not known to sowmeta; "
        "collect and synthesize with the unfused model"
    )


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def fuse_bn(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every BatchNorm folded into its convolution.

    Which convolution feeds which BatchNorm is observed, not guessed: one forward pass of
    ``example_input`` (default: a random 1x3x64x64 image) pairs each BatchNorm with the
    Conv2d whose output tensor it receives. The BatchNorm becomes ``nn.Identity`` (timm's
    ``BatchNormAct2d``: its activation).

    Raises:
        ModelError: a BatchNorm's input is not the output of a Conv2d (e.g. DenseNet's
            pre-activation blocks), or the conv output also feeds another layer.
    """
    fused = copy.deepcopy(model).eval()
    named = dict(fused.named_modules())
    bns = {n: m for n, m in named.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if not bns:
        return fused
    convs = {n: m for n, m in named.items() if isinstance(m, nn.Conv2d)}
    produced: dict[int, str] = {}
    fed: dict[str, int] = {}
    uses: dict[int, int] = {}
    handles = []
    keep: list[torch.Tensor] = []  # every tensor seen stays alive, so id() is unique during the pass
    for n, m in convs.items():
        handles.append(m.register_forward_hook(lambda mod, a, out, _n=n: produced.__setitem__(id(out), _n)))
    for n, m in named.items():
        if n and m is not fused:

            def count(mod: nn.Module, args: tuple, _n: str = n) -> None:
                for a in args:
                    if isinstance(a, torch.Tensor):
                        keep.append(a)
                        uses[id(a)] = uses.get(id(a), 0) + 1
                if _n in bns:
                    fed[_n] = id(args[0])

            handles.append(m.register_forward_pre_hook(count))
    x = example_input if example_input is not None else torch.rand(1, 3, 64, 64)
    try:
        with torch.no_grad():
            for m in convs.values():
                handles.append(m.register_forward_hook(lambda mod, a, out: keep.append(out)))
            fused(x)
    finally:
        for h in handles:
            h.remove()
    for bn_name, bn in bns.items():
        tail = _after_norm(bn_name, bn)
        if bn_name not in fed:
            raise ModelError(f"cannot fuse {bn_name}: it did not run in a forward pass of the example input")
        conv_name = produced.get(fed[bn_name])
        if conv_name is None:
            raise ModelError(
                f"cannot fuse {bn_name}: its input is not the output of a Conv2d "
                "(pre-activation block?); use the unfused model with taps 'bn-inputs'"
            )
        if uses.get(fed[bn_name], 0) > 1:
            raise ModelError(f"cannot fuse {bn_name}: the output of {conv_name} also feeds another layer")
        _set(fused, conv_name, _fold(convs[conv_name], bn))
        _set(fused, bn_name, tail)
    return fused
