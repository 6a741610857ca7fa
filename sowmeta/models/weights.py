"""Weights files and fingerprints: state dicts read safely, checked against a model, hashed.

Weights files are safetensors or torch checkpoints read with ``weights_only=True``: nothing a
user downloads is ever unpickled as arbitrary objects.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError, first_line

__all__ = ["load_weights_file", "load_state", "load_into", "fingerprint", "structure_fingerprint", "short_error"]


def short_error(exc: BaseException) -> str:
    """An exception's message cut to its first line (torch's messages run over several)."""
    return first_line(str(exc)) or type(exc).__name__


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch checkpoint (``weights_only=True``)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file {str(p)!r} does not exist; pass an existing file, DEFAULT, or none")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
            state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"cannot read weights {str(p)!r}: the checkpoint holds pickled objects other than tensors, "
            "which sowmeta never unpickles; save model.state_dict() (or safetensors) instead"
        ) from exc
    except Exception as exc:
        raise WeightsError(f"cannot read weights {str(p)!r} ({short_error(exc)}); only safetensors or plain tensor checkpoints load") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights {str(p)!r} do not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(module: nn.Module, path: str) -> None:
    """Load the weights file at ``path`` into ``module`` (keys and shapes must fit)."""
    load_state(module, load_weights_file(path), path)


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Load ``state`` into ``module``, refusing missing, unexpected or mis-shaped keys (``path`` names it in errors)."""
    own = module.state_dict()
    # num_batches_tracked only drives BatchNorm momentum in training; many published weights omit it.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise WeightsError(
            f"weights {path!r} do not fit the architecture ({what}; {len(missing)} missing, "
            f"{len(unexpected)} unexpected keys); check --model"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise WeightsError(f"weights {path!r}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    module.load_state_dict(state, strict=False)


def fingerprint(module: nn.Module) -> str:
    """sha256 over the state dict: for each key in sorted order, key, dtype, shape, then raw bytes.

    See docs/format.md ("Model fingerprint") for the exact byte layout.
    """
    h = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        header = f"{key}\0{str(t.dtype).removeprefix('torch.')}\0{','.join(str(s) for s in t.shape)}\0"
        h.update(header.encode("utf-8"))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def structure_fingerprint(module: nn.Module) -> str:
    """sha256 over the module tree: every submodule's name and class name, every parameter's and buffer's name and shape.

    Independent of the weights' values and of where the classes' code lives: two models share
    it exactly when they are the same architecture (see docs/format.md, "Model structure").
    """
    h = hashlib.sha256()
    for name, m in module.named_modules():
        h.update(f"m\0{name}\0{type(m).__name__}\n".encode())
    for key, t in module.state_dict().items():
        h.update(f"t\0{key}\0{','.join(str(s) for s in t.shape)}\n".encode())
    return "sha256:" + h.hexdigest()
