"""``package.module:factory``: a model built by the user's own Python code (never from a manifest)."""

from __future__ import annotations

from typing import Any

import importlib
import re

from torch import nn

from ..errors import ModelError, WeightsError
from .preprocess import Preprocessing
from .loaded import LoadedModel
from .sources import MODEL_SOURCES
from .weights import load_into, short_error

__all__ = ["PythonSource", "is_code_reference"]

_REF_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_code_reference(name: str) -> bool:
    """True for ``package.module:factory``: a name whose model would be built by importing and calling Python code.

    ``timm:NAME`` and ``hf-hub:ORG/NAME`` have a colon too, but their sources run no code.
    """
    if ":" not in name:
        return False
    from .sources import source_for

    try:
        return source_for(name).runs_code
    except ModelError:
        return True


class PythonSource:
    """Imports ``package.module`` and calls ``factory(num_classes)`` (or ``factory()``): runs the caller's code."""

    runs_code = True

    def claims(self, name: str) -> bool:
        return bool(_REF_RE.match(name))

    def names(self) -> list[str]:
        return []

    def build(self, name: str, weights: str | None, num_classes: int | None, args: dict[str, Any]) -> LoadedModel:
        mod_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelError(f"cannot import factory {name!r}: {short_error(exc)}; check PYTHONPATH and the name after ':'") from exc
        try:
            module = fn(num_classes, **args) if num_classes is not None else fn(**args)
        except TypeError as exc:
            raise ModelError(f"factory {name!r} does not take these arguments ({short_error(exc)}); check --model-arg") from exc
        if not isinstance(module, nn.Module):
            raise ModelError(f"factory {name!r} returned {type(module).__name__}, not a torch.nn.Module")
        if weights is not None:
            if weights.upper() == "DEFAULT":
                raise WeightsError(f"factory models have no DEFAULT weights; pass weights=FILE or weights='none' for {name}")
            load_into(module, weights)
        prep = Preprocessing(crop=224, resize=256)
        return LoadedModel(module, name, weights, num_classes or 0, None, prep)  # load_model counts the outputs at the final input size


MODEL_SOURCES.register("python", PythonSource())
