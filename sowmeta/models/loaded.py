"""``LoadedModel``: a classifier ready for use, with what a bundle must record about it."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..preprocess import Preprocessing

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    """A model ready for use, with what a bundle must record about it."""

    module: nn.Module
    name: str  # the --model string that rebuilds it
    weights: str | None  # the --weights string ("DEFAULT", an enum name, a file, or None)
    num_classes: int
    labels: list[str] | None
    preprocessing: Preprocessing
    base_model: str | None = None  # a Hub id of the weights, where known
