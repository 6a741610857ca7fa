"""What a collection records besides the statistics: the model, the data's name, the labels, and the report."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..bundle import Bundle, ModelRecord
from ..data.jpeg_quality import compression_note
from ..errors import ConfigError
from ..hub.names import check_repo_id
from ..models import CUSTOM_ARCHITECTURE, LoadedModel, fingerprint, is_code_reference, structure_fingerprint
from ..models.fuse import fuse_bn
from .options import CollectOptions

__all__ = ["CollectReport", "Progress", "prepare", "model_record", "check_base_model", "record_for", "data_name", "labels_for", "save", "note_compression"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class CollectReport:
    """What a collection run saw besides the statistics."""

    images: int = 0
    skipped: list[str] = field(default_factory=list)
    rejected: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0


def prepare(model: LoadedModel, fuse: bool, device: torch.device) -> tuple[nn.Module, bool]:
    module = model.module
    if fuse:
        crop = model.preprocessing.crop
        module = fuse_bn(module, torch.rand(1, 3, crop, crop))
    return module.to(device).eval(), fuse


def model_record(
    name: str, module: nn.Module, num_classes: int, labels: list[str], *, weights: str | None, fused: bool = False,
    base_model: str | None = None, args: dict[str, Any] | None = None, weights_sha256: str | None = None,
) -> ModelRecord:
    """What a manifest says about the model: a user's ``module:factory`` is recorded as ``custom`` (never code to run)."""
    code = is_code_reference(name)
    return ModelRecord(
        architecture=CUSTOM_ARCHITECTURE if code else name,
        fingerprint=fingerprint(module),
        num_classes=num_classes,
        labels=labels,
        weights=weights,
        fused=fused,
        base_model=base_model,
        structure=structure_fingerprint(module),
        factory=name if code else None,
        args=dict(args or {}),
        weights_sha256=weights_sha256,
    )


def check_base_model(model: LoadedModel) -> None:
    if model.base_model is not None:
        try:
            check_repo_id(model.base_model)
        except ConfigError:
            raise ConfigError(f"--base-model {model.base_model!r} is not a Hub model id; use ORG/NAME") from None


def record_for(model: LoadedModel, module: nn.Module, fused: bool, labels: Sequence[str], num_classes: int) -> ModelRecord:
    return model_record(model.name, module, num_classes, list(labels), weights=model.weights, fused=fused, base_model=model.base_model,
                         args=model.args, weights_sha256=model.weights_sha256)


def data_name(dataset: str | None, data: object) -> str:
    """What the manifest says the data was: the name given, else the folder's base name, or its parent's for a split
    folder (``train``, ``val``, ``test``: ``data/cifar10/train`` is ``cifar10``); never a machine's path."""
    if dataset is not None:
        if not dataset.strip() or len(dataset) > 200:
            raise ConfigError(f"--dataset {dataset!r} is not a usable name; pass a short name such as cifar10 or imagenet-1k")
        return dataset.strip()
    if isinstance(data, DataLoader):
        return type(data.dataset).__name__
    if isinstance(data, Mapping):
        return "seed files"
    folder = Path(data).resolve()
    if folder.name.lower() in _SPLIT_NAMES and folder.parent.name:  # data/cifar10/train -> cifar10, not "train"
        return folder.parent.name
    return folder.name or "data"


_SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


def labels_for(model: LoadedModel, outputs: int) -> list[str]:
    """One label per output: the model's own, else the class indices."""
    if model.labels and len(model.labels) == outputs:
        return list(model.labels)
    return [str(i) for i in range(outputs)]


def save(bundle: Bundle, o: CollectOptions) -> None:
    """Write the bundle to ``o.out``, when there is one."""
    if o.out is not None:
        bundle.save(o.out, overwrite=o.overwrite, dtype=o.dtype, shard_bytes=o.shard_bytes)


def note_compression(paths: Sequence[Path], notice: Callable[[str], None] | None) -> None:
    """Tell the user when the images are JPEGs compressed enough to show in the statistics."""
    note = compression_note(paths)
    if note is None:
        return
    if notice is not None:
        notice(note)
    else:
        log.warning(note)
