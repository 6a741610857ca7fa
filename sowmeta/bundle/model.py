"""The model a bundle was recorded on, built from its manifest without trusting it (docs/format.md, "Trust")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..models import LoadedModel, fetch_note, load_model, load_model_from_record, manifest_weights
from ..models.fuse import fuse_bn
from ..models.loading import manifest_args
from ..models.weights_ref import HF_PREFIX
from .manifest import Manifest

__all__ = ["load_model_for"]

log = logging.getLogger(__name__)


def load_model_for(
    manifest: Manifest, *, model: str | None = None, weights: str | None = None, args: dict[str, Any] | None = None,
    device: torch.device | str = "cpu", notice: Callable[[str], None] | None = None,
) -> LoadedModel:
    """The model a bundle was recorded on, ready to check or synthesize with.

    ``model``/``weights``/``args`` are the user's (``--model``/``--weights``/``--model-arg``) and are used as given;
    what the manifest names is used only through ``load_model_from_record`` (no code, no
    arbitrary files), and its ``model.args`` only when they are shape arguments (``manifest_args``). The bundle's preprocessing and class count apply; a fused bundle gets the
    model fused the same way. Before weights the manifest names are downloaded, ``notice`` gets
    one line saying so (default: a warning on this module's logger).
    """
    m = manifest.model
    # weights found for the bundle (hf:// beside it) must be the recorded ones; a file the user names is theirs to vouch for
    expect = m.weights_sha256 if weights is None or weights.startswith(HF_PREFIX) else None
    note = fetch_note(model or m.architecture, m.weights) if weights is None else None
    if note is not None:
        (notice or log.warning)(note)
    if model is not None:
        loaded = load_model(model, weights=weights if weights is not None else manifest_weights(model, m.weights or "none"),
                            num_classes=m.num_classes, preprocessing=manifest.preprocessing,
                            args=args if args is not None else manifest_args(m.args), expect_sha256=expect)
    else:
        loaded = load_model_from_record(m.architecture, recorded_weights=m.weights, weights=weights, num_classes=m.num_classes,
                                        preprocessing=manifest.preprocessing, factory=m.factory,
                                        args=args if args is not None else manifest_args(m.args), expect_sha256=expect)
    if m.fused:
        crop = manifest.preprocessing.crop
        loaded.module = fuse_bn(loaded.module, torch.rand(1, 3, crop, crop))
    loaded.module.to(device)
    return loaded
