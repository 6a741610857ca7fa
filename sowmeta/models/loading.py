"""``load_model``: a model by name from the sources; and the model a manifest's record names, trusting nothing in it."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any


from ..errors import ConfigError, ModelError, WeightsError, first_line
from .taps import count_outputs
from .preprocess import Preprocessing
from .loaded import LoadedModel
from .python_source import is_code_reference
from .sources import MODEL_SOURCES, source_for
from .torchvision_source import torchvision_weights_names
from .weights_ref import HF_PREFIX, resolve_weights

__all__ = ["CUSTOM_ARCHITECTURE", "list_models", "load_model", "load_model_from_record", "manifest_weights", "parse_model_args",
           "fetch_note", "MANIFEST_MODEL_ARGS", "manifest_args"]

log = logging.getLogger(__name__)

CUSTOM_ARCHITECTURE = "custom"

# The model arguments a manifest may set (docs/format.md, "Trust"): shapes, never a file, a download or a code path.
MANIFEST_MODEL_ARGS = (
    "img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads", "mlp_ratio", "window_size", "reg_tokens",
    "drop_rate", "drop_path_rate",
)


def _shape_value(value: object) -> bool:
    """An integer, a finite number, or a short list of integers (bools excluded: they switch code paths)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return True
    return isinstance(value, list) and 0 < len(value) <= 4 and all(type(v) is int for v in value)


def manifest_args(args: dict[str, Any], *, what: str = "the bundle's model.args", drop: bool = False) -> dict[str, Any]:
    """The model arguments a stranger's file may set: the shape arguments of ``MANIFEST_MODEL_ARGS``.

    With ``drop``, any other argument is left out with a logged warning (a repository's
    ``config.json``: the structure check then tells whether the model is right).

    Raises:
        ModelError: an argument that could choose a file, a download or a code path (timm's
            ``checkpoint_path``, ``pretrained``, ``pretrained_cfg_overlay``, ...), or a value that is not a shape.
    """
    kept: dict[str, Any] = {}
    for key, value in args.items():
        if key in MANIFEST_MODEL_ARGS and _shape_value(value):
            kept[key] = value
        elif drop:
            log.warning("left out %s=%r of %s: only shape arguments are taken from it", key, value, what)
        elif key not in MANIFEST_MODEL_ARGS:
            raise ModelError(
                f"{what} sets {key!r}, which a bundle may not choose (only shape arguments: {', '.join(MANIFEST_MODEL_ARGS)}); "
                f"pass --model-arg {key}=VALUE yourself if you trust it"
            )
        else:
            raise ModelError(f"{what} sets {key}={value!r}, which is not a number or a list of integers; the bundle is not usable as it is")
    return kept


def fetch_note(architecture: str, weights: str | None) -> str | None:
    """The line a user sees before sowmeta downloads weights a bundle names (None when nothing would be fetched).

    What a manifest may make sowmeta download (docs/format.md, "Trust"): torchvision's own weights
    by enum name, and Hub files (``hf://``, ``hf-hub:`` and ``timm:`` models with DEFAULT), each
    checked against the bundle's fingerprint and, where recorded, the file's sha256.
    """
    w = weights or ""
    if w.startswith(HF_PREFIX) or (architecture.startswith(("hf-hub:", "timm:")) and w.upper() == "DEFAULT"):
        where = "the Hugging Face Hub"
    elif w and (w.upper() == "DEFAULT" or w in torchvision_weights_names(architecture)) and torchvision_weights_names(architecture):
        where = "torchvision's download site"
    else:
        return None
    return (f"the bundle names the model {architecture} with weights {weights}: fetching them from {where} unless cached, "
            "then checking them against the bundle's fingerprint (pass weights=FILE to use your own)")


def list_models(pattern: str = "*") -> list[str]:
    """Names ``load_model`` accepts, by glob: every source's own list (built-ins, torchvision), and the names a source
    too large to list finds for the pattern (``timm:vit_*`` asks timm, when it is installed)."""
    import fnmatch

    names = [n for _, s in MODEL_SOURCES.items() for n in s.names() if fnmatch.fnmatchcase(n, pattern)]
    for _, source in MODEL_SOURCES.items():
        search = getattr(source, "search", None)
        if search is not None:
            names += [n for n in search(pattern) if n not in names]
    return names


def parse_model_args(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["img_size=32", "drop_rate=0.1", "name=x"]`` (the CLI's ``--model-arg``) as keyword arguments.

    Values are read as JSON where they are JSON (numbers, true/false/null, lists), else as text.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"--model-arg takes KEY=VALUE with a Python name as KEY, not {item!r}")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def load_model(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = "DEFAULT",
    num_classes: int | None = None,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    args: dict[str, Any] | None = None,
    trusted: bool = True,
    expect_sha256: str | None = None,
) -> LoadedModel:
    """Build a model by name and load its weights; the model is returned in eval mode.

    Args:
        name: a registered name (``cifar-resnet56``), a torchvision classifier (``resnet50``),
            or ``package.module:factory`` (any name a source in ``MODEL_SOURCES`` claims).
        weights: ``"DEFAULT"``, a torchvision weights name, a file (safetensors or torch
            checkpoint; a path or a ``Path``), or ``None``/``"none"`` for random initialisation.
        num_classes: output classes, for models built without pretrained weights.
        preprocessing: replaces the preprocessing that comes with the weights; a dict of
            ``crop``/``resize``/``mean``/``std`` changes only those (``Preprocessing.with_options``).
        args: keyword arguments for the model's constructor (``package.module:factory`` and timm
            models; the CLI's ``--model-arg``).
        trusted: False when ``name`` comes from a manifest: then no source that runs code is used.
        expect_sha256: the sha256 a weights file must have (a manifest's ``weights_sha256``).

    ``num_classes`` of the result is counted by a forward pass at the final input size.
    """
    if weights is not None:
        weights = os.fspath(weights)
    if weights is not None and weights.lower() == "none":
        weights = None
    source = source_for(name, trusted=trusted)
    ref = None
    if weights is not None and weights.upper() != "DEFAULT" and (weights.startswith(HF_PREFIX) or Path(weights).suffix or "/" in weights):
        ref = resolve_weights(weights, expect_sha256=expect_sha256)
    loaded = source.build(name, str(ref.path) if ref else weights, num_classes, dict(args or {}))
    loaded.args = dict(args or {})
    if ref is not None:
        loaded.weights, loaded.weights_sha256 = ref.portable, ref.sha256
    if isinstance(preprocessing, dict):
        loaded.preprocessing = loaded.preprocessing.with_options(**preprocessing)
    elif preprocessing is not None:
        loaded.preprocessing = preprocessing
    loaded.module.eval()
    try:
        loaded.num_classes = count_outputs(loaded.module, loaded.preprocessing.crop)
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:  # the model cannot take this input size
        raise ModelError(
            f"{name} fails on a {loaded.preprocessing.crop} px image ({first_line(str(exc))}); pass its input size with --crop"
        ) from exc
    if loaded.labels is not None and len(loaded.labels) != loaded.num_classes:
        loaded.labels = None
    return loaded


def manifest_weights(name: str, weights: str | None) -> str | None:
    """The weights a manifest may make sowmeta fetch: none, DEFAULT, a torchvision weights name, or a Hub file ``hf://``.

    A local file or URL in a manifest is never opened or downloaded: the user passes the file
    (or ``open_model`` finds it in the bundle's own Hub repository, sha256-checked).
    """
    if weights is None or weights.lower() == "none" or weights.upper() == "DEFAULT":
        return weights
    if weights in torchvision_weights_names(name) or weights.startswith(HF_PREFIX):
        return weights
    raise WeightsError(
        f"the bundle names the weights {Path(weights).name!r}, which sowmeta does not fetch from a manifest; "
        "pass weights=FILE (the file the bundle was recorded with)"
    )


def load_model_from_record(
    architecture: str,
    *,
    recorded_weights: str | None,
    weights: str | None = None,
    num_classes: int | None = None,
    preprocessing: Preprocessing | None = None,
    factory: str | None = None,
    args: dict[str, Any] | None = None,
    expect_sha256: str | None = None,
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
            f"pass{hint} weights=FILE yourself"
        )
    try:
        source_for(architecture, trusted=False)
    except ModelError:
        raise ModelError(f"the bundle names model {architecture!r}, which is not a sowmeta or torchvision model; pass --model yourself") from None
    if weights is None:
        if recorded_weights is None:
            raise WeightsError(f"the bundle's model {architecture} names no weights; pass weights=FILE (or weights='none')")
        weights = manifest_weights(architecture, recorded_weights)
    return load_model(architecture, weights=weights, num_classes=num_classes, preprocessing=preprocessing, args=args, trusted=False,
                      expect_sha256=expect_sha256)


def _known_prefix(name: str) -> bool:
    """A ``source:NAME`` a code-free source claims (e.g. ``timm:``, ``hf-hub:``)."""
    return any(not s.runs_code and s.claims(name) for _, s in MODEL_SOURCES.items())
