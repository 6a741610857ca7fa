"""``load_model``: a model by name from the sources; and the model a bundle names, trusting nothing in its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError, WeightsError, first_line
from ..taps import count_outputs
from ..manifest import Manifest
from ..preprocess import Preprocessing
from .loaded import LoadedModel
from .python_source import is_code_reference
from .sources import MODEL_SOURCES, source_for
from .torchvision_source import torchvision_weights_names

__all__ = ["CUSTOM_ARCHITECTURE", "list_models", "load_model", "load_model_from_record", "load_model_for", "manifest_weights"]

CUSTOM_ARCHITECTURE = "custom"


def list_models(pattern: str = "*") -> list[str]:
    """Names ``load_model`` accepts from every source that lists them (built-ins, torchvision), by glob."""
    import fnmatch

    return [n for _, s in MODEL_SOURCES.items() for n in s.names() if fnmatch.fnmatchcase(n, pattern)]


def load_model(
    name: str,
    *,
    weights: str | None = "DEFAULT",
    num_classes: int | None = None,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    trusted: bool = True,
) -> LoadedModel:
    """Build a model by name and load its weights; the model is returned in eval mode.

    Args:
        name: a registered name (``cifar-resnet56``), a torchvision classifier (``resnet50``),
            or ``package.module:factory`` (any name a source in ``MODEL_SOURCES`` claims).
        weights: ``"DEFAULT"``, a torchvision weights name, a file (safetensors or torch
            checkpoint), or ``None``/``"none"`` for random initialisation.
        num_classes: output classes, for models built without pretrained weights.
        preprocessing: replaces the preprocessing that comes with the weights; a dict of
            ``crop``/``resize``/``mean``/``std`` changes only those (``Preprocessing.with_options``).
        trusted: False when ``name`` comes from a manifest: then no source that runs code is used.

    ``num_classes`` of the result is counted by a forward pass at the final input size.
    """
    if weights is not None and weights.lower() == "none":
        weights = None
    loaded = source_for(name, trusted=trusted).build(name, weights, num_classes)
    if isinstance(preprocessing, dict):
        loaded.preprocessing = loaded.preprocessing.with_options(**preprocessing)
    elif preprocessing is not None:
        loaded.preprocessing = preprocessing
    loaded.module.eval()
    try:
        loaded.num_classes = count_outputs(loaded.module, loaded.preprocessing.crop)
    except (RuntimeError, ValueError, TypeError) as exc:  # the model cannot take this input size
        raise ModelError(
            f"{name} fails on a {loaded.preprocessing.crop} px image ({first_line(str(exc))}); pass its input size with --crop"
        ) from exc
    if loaded.labels is not None and len(loaded.labels) != loaded.num_classes:
        loaded.labels = None
    return loaded


def manifest_weights(name: str, weights: str | None) -> str | None:
    """The weights a manifest may make sowmeta fetch: none, DEFAULT, or a torchvision weights name.

    A file path or URL in a manifest is never opened or downloaded: the user passes the file.
    """
    if weights is None or weights.lower() == "none" or weights.upper() == "DEFAULT":
        return weights
    if weights in torchvision_weights_names(name):
        return weights
    raise WeightsError(
        f"the bundle names the weights {Path(weights).name!r}, which sowmeta does not fetch from a manifest; "
        "pass --weights FILE (the file the bundle was recorded with)"
    )


def load_model_from_record(
    architecture: str,
    *,
    recorded_weights: str | None,
    weights: str | None = None,
    num_classes: int | None = None,
    preprocessing: Preprocessing | None = None,
    factory: str | None = None,
) -> LoadedModel:
    """Build the model a bundle's manifest names, trusting nothing in it.

    Only sources that run no code resolve it (registered names, torchvision, Hub families): a
    manifest never makes sowmeta import or call code (``module:factory``, a custom
    architecture), and its ``recorded_weights`` are used only when they are none, DEFAULT or
    a torchvision weights name. ``weights`` given by the caller (the user's ``--weights``)
    are used as they are.

    Raises:
        ModelError: the architecture names code, is custom, or is unknown; pass the model yourself.
    """
    if architecture == CUSTOM_ARCHITECTURE or is_code_reference(architecture) and not _known_prefix(architecture):
        hint = f" --model {factory}" if factory and is_code_reference(factory) else " --model MODULE:FACTORY"
        raise ModelError(
            f"the bundle's model is custom Python code ({factory or architecture!r}), which sowmeta never runs from a manifest; "
            f"pass{hint} --weights FILE yourself"
        )
    try:
        source_for(architecture, trusted=False)
    except ModelError:
        raise ModelError(f"the bundle names model {architecture!r}, which is not a sowmeta or torchvision model; pass --model yourself") from None
    if weights is None:
        if recorded_weights is None:
            raise WeightsError(f"the bundle's model {architecture} names no weights; pass --weights FILE (or none)")
        weights = manifest_weights(architecture, recorded_weights)
    return load_model(architecture, weights=weights, num_classes=num_classes, preprocessing=preprocessing, trusted=False)


def _known_prefix(name: str) -> bool:
    """A ``source:NAME`` a code-free source claims (e.g. ``timm:``, ``hf-hub:``)."""
    return any(not s.runs_code and s.claims(name) for _, s in MODEL_SOURCES.items())


def load_model_for(
    manifest: Manifest, *, model: str | None = None, weights: str | None = None, device: torch.device | str = "cpu"
) -> LoadedModel:
    """The model a bundle was recorded on, ready to check or synthesize with.

    ``model``/``weights`` are the user's (``--model``/``--weights``) and are used as given;
    what the manifest names is used only through ``load_model_from_record`` (no code, no
    arbitrary files). The bundle's preprocessing and class count apply; a fused bundle gets the
    model fused the same way.
    """
    m = manifest.model
    if model is not None:
        loaded = load_model(model, weights=weights if weights is not None else manifest_weights(model, m.weights or "none"),
                            num_classes=m.num_classes, preprocessing=manifest.preprocessing)
    else:
        loaded = load_model_from_record(m.architecture, recorded_weights=m.weights, weights=weights, num_classes=m.num_classes,
                                        preprocessing=manifest.preprocessing, factory=m.factory)
    if m.fused:
        from ..fuse import fuse_bn

        crop = manifest.preprocessing.crop
        loaded.module = fuse_bn(loaded.module, torch.rand(1, 3, crop, crop))
    loaded.module.to(device)
    return loaded
