"""sowmeta: release class-conditional feature statistics with a classifier, and synthesize images from it.

The data flows one way: collect -> bundle -> registry -> synth -> evaluate / distill
(docs/architecture.md). Names are imported on first use, so ``import sowmeta.errors`` and the
CLI's ``--help`` and ``--version`` do not load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .version import __version__

# public name -> the module that defines it
_HOME = {
    "errors": ".errors",
    "SowmetaError": ".errors",
    "Registry": ".named",
    # models
    "LoadedModel": ".models",
    "load_model": ".models",
    "list_models": ".models",
    "register_model": ".models",
    "MODEL_SOURCES": ".models",
    "fingerprint": ".models",
    "fuse_bn": ".fuse",
    "Preprocessing": ".preprocess",
    # statistics and collection
    "Tap": ".taps",
    "TAP_PRESETS": ".taps",
    "resolve_taps": ".taps",
    "tap_hooks": ".taps",
    "ClassMoments": ".stats",
    "collect": ".collectors",
    "collect_seeds": ".collectors",
    "TrainingCollector": ".collectors",
    "CollectReport": ".collectors",
    # bundles
    "Bundle": ".bundle",
    "Manifest": ".manifest",
    "ModelRecord": ".manifest",
    "SourceRecord": ".manifest",
    "TapRecord": ".manifest",
    "TapStats": ".bundle_files",
    # synthesis
    "SynthConfig": ".synth",
    "SynthResult": ".synth",
    "SynthProgress": ".synth",
    "synthesize": ".synth",
    # evaluation and distillation
    "evaluate": ".evaluation",
    "EvaluationReport": ".evaluation",
    "distill": ".distillation",
    "DistillConfig": ".distill_config",
    "DistillResult": ".distillation",
}

__all__ = ["__version__", *_HOME]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'sowmeta' has no attribute {name!r}")
    module = import_module(home, __name__)
    value = module if name == "errors" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
