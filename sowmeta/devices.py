"""Where to run: a ``--device`` string checked against the machine before any work starts."""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["check_device"]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, if this machine has it.

    Raises:
        ConfigError: a name torch does not know, ``cuda`` without a CUDA device (or an index past
            the last one), ``mps`` without Apple's GPU.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {str(device)!r} is not one torch knows; use cpu, cuda, cuda:1, ...") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {str(device)!r}: this machine has no CUDA device that torch can use; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device {str(device)!r}: Apple's GPU (MPS) is not available here; use --device cpu")
    return dev
