"""Is this model the one a bundle was recorded on? Taps, channels, classes, structure, then weights."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelMismatchError
from .manifest import Manifest
from ..models.taps import probe

__all__ = ["check_model"]


def check_model(manifest: Manifest, model: nn.Module, *, check_weights: bool = True, device: torch.device | str = "cpu") -> None:
    """Raise ``ModelMismatchError`` unless ``model`` is the one ``manifest`` was recorded on.

    Checks, in order: every tap's module exists, every tap's channel count, the number of
    outputs (classes), the module structure (format 1.1+), then, with ``check_weights``, the
    weights' sha256 fingerprint. Skipping the weights never skips the rest.
    """
    from ..models import fingerprint, structure_fingerprint

    named = dict(model.named_modules())
    for t in manifest.taps:
        if t.module not in named:
            raise ModelMismatchError(f"tap {t.name!r}: the model has no module {t.module!r}; wrong architecture?", tap=t.name)
    found = probe(model, [t.tap for t in manifest.taps], manifest.preprocessing.crop, device=device)
    for t in manifest.taps:
        if found.channels.get(t.name) != t.channels:
            raise ModelMismatchError(
                f"tap {t.name!r}: the bundle has {t.channels} channels, the model gives {found.channels.get(t.name)}", tap=t.name
            )
    if found.outputs != manifest.model.num_classes:
        raise ModelMismatchError(f"the model has {found.outputs} outputs, the bundle {manifest.model.num_classes} classes")
    recorded = manifest.model.structure
    if recorded is not None and structure_fingerprint(model) != recorded:
        raise ModelMismatchError(
            f"the model's architecture differs from the one the bundle was recorded on ({manifest.model.architecture}); "
            "pass the right --model"
        )
    if check_weights:
        fp = fingerprint(model)
        if fp != manifest.model.fingerprint:
            raise ModelMismatchError(
                f"model fingerprint {fp[:19]}... differs from the bundle's {manifest.model.fingerprint[:19]}...: "
                "these statistics were recorded with other weights"
            )
