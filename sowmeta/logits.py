"""Logits from whatever a classifier returns: a tensor, a tuple or list, a dict, or a ``ModelOutput``."""

from __future__ import annotations

from typing import Any

import torch

from .errors import ModelError

__all__ = ["logits_of"]


def logits_of(output: Any) -> torch.Tensor:
    """The [N, classes] logits in a model's output.

    Accepts a tensor, a tuple/list whose first item is the logits (as many models return with
    auxiliary outputs), a mapping or object with a ``logits`` entry (transformers' ``ModelOutput``).
    """
    if isinstance(output, torch.Tensor):
        logits = output
    elif hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        logits = output.logits
    elif isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        logits = output["logits"]
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        logits = output[0]
    else:
        raise ModelError(
            f"the model returned {type(output).__name__}, in which sowmeta finds no logits; "
            "return a tensor, a tuple starting with the logits, or a dict/ModelOutput with 'logits'"
        )
    if logits.dim() != 2:
        raise ModelError(f"the model's logits have shape {tuple(logits.shape)}; a classifier returns [batch, classes]")
    return logits

