"""``LoadedModel``: a classifier ready for use, with what a bundle must record about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .preprocess import Preprocessing

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    """A model ready for use, with what a bundle must record about it."""

    module: nn.Module
    name: str  # the --model string that rebuilds it
    weights: str | None  # portable: "DEFAULT", an enum name, hf://ORG/NAME@COMMIT/FILE, a file's name, or None
    num_classes: int
    labels: list[str] | None
    preprocessing: Preprocessing
    base_model: str | None = None  # a Hub id of the weights, where known
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments the model was built with (--model-arg)
    weights_sha256: str | None = None  # of the weights file, when a file (local or from the Hub) gave them
