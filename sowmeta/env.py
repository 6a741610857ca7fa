"""Every environment variable sowmeta reads, in one place."""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import ConfigError

__all__ = ["shared_dir", "cache_dir", "registry_dir", "registry_choice", "hf_endpoint", "hf_offline", "hf_hub_cache", "hub_timeout", "hub_deadline",
           "debug_enabled", "compile_enabled"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """``SOWMETA_SHARED``, else ``../shared`` beside the repository root (real data for tests)."""
    value = os.environ.get("SOWMETA_SHARED")
    return Path(value) if value else _REPO_ROOT.parent / "shared"


def cache_dir() -> Path:
    """``SOWMETA_CACHE``, else ``$XDG_CACHE_HOME/sowmeta`` or ``~/.cache/sowmeta``."""
    value = os.environ.get("SOWMETA_CACHE")
    if value:
        return Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "sowmeta"


def registry_choice() -> str | None:
    """``SOWMETA_REGISTRY`` as given: ``hub``, ``local``, a directory, or None when unset."""
    return os.environ.get("SOWMETA_REGISTRY") or None


def registry_dir() -> Path:
    """``SOWMETA_REGISTRY`` when it is a directory, else ``<cache>/registry``: the embedded local registry."""
    value = registry_choice()
    return Path(value) if value and value not in ("hub", "local") else cache_dir() / "registry"


def hf_endpoint() -> str | None:
    """``HF_ENDPOINT``, re-read per call (huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def hf_offline() -> bool:
    """``HF_HUB_OFFLINE=1``, re-read per call (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def hf_hub_cache() -> Path:
    """The standard Hugging Face cache: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (re-read per call)."""
    value = os.environ.get("HF_HUB_CACHE")
    if value:
        return Path(value).expanduser()
    home = os.environ.get("HF_HOME")
    return (Path(home).expanduser() if home else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface") / "hub"


def _seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name`` (``default`` when unset or empty)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < 1e6:
        raise ConfigError(f"{name}={value!r} is not a number of seconds; set it to a plain number such as {default:g}, or unset it")
    return seconds


def hub_timeout() -> float:
    """``SOWMETA_HUB_TIMEOUT``: seconds a Hub request may wait for an answer (default 30; connecting waits at most 10)."""
    return _seconds("SOWMETA_HUB_TIMEOUT", 30.0)


def hub_deadline() -> float:
    """``SOWMETA_HUB_DEADLINE``: seconds a whole pull from the Hub may take (default 3600)."""
    return _seconds("SOWMETA_HUB_DEADLINE", 3600.0)


def debug_enabled() -> bool:
    """``SOWMETA_DEBUG=1`` makes the CLI show tracebacks."""
    return os.environ.get("SOWMETA_DEBUG", "") not in ("", "0", "false", "False")


def compile_enabled() -> bool:
    """``SOWMETA_COMPILE=0`` keeps sowmeta from compiling its kernels with ``torch.compile`` (default: on)."""
    return os.environ.get("SOWMETA_COMPILE", "").strip().lower() not in ("0", "false", "no", "off")
