"""sowmeta: release class-conditional feature statistics with a classifier, and synthesize images from it.

The data flows one way: collect -> bundle -> registry -> synth -> evaluation / distillation
(docs/architecture.md). Names are imported on first use, so ``import sowmeta.errors`` and the
CLI's ``--help`` and ``--version`` do not load torch. Module paths of earlier versions that the
documentation named (``sowmeta.metrics``, ``sowmeta.preprocess``, ...) are the same modules under
their new names (``_MOVED``).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from importlib import import_module
from types import ModuleType
from typing import Any

from .bundle import pretrained as _pretrained
from .lazy import exports
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
    "fuse_bn": ".models.fuse",
    "Preprocessing": ".models.preprocess",
    "Tap": ".models.taps",
    "TAP_PRESETS": ".models.taps",
    "resolve_taps": ".models.taps",
    "tap_hooks": ".models.taps",
    # statistics and collection
    "ClassMoments": ".moments",
    "collect": ".collectors",
    "collect_seeds": ".collectors",
    "TrainingCollector": ".collectors",
    "CollectReport": ".collectors",
    "audit": ".privacy",
    "AuditReport": ".privacy",
    # bundles
    "Bundle": ".bundle",
    "Manifest": ".bundle",
    "ModelRecord": ".bundle",
    "SourceRecord": ".bundle",
    "TapRecord": ".bundle",
    "TapStats": ".bundle",
    # synthesis
    "SynthConfig": ".synth",
    "SynthResult": ".synth",
    "SynthProgress": ".synth",
    "synthesize": ".synth",
    # evaluation and distillation
    "evaluate": ".evaluation",
    "EvaluationReport": ".evaluation",
    "distill": ".distillation",
    "DistillConfig": ".distillation",
    "DistillResult": ".distillation",
}

__all__ = ["__version__", *_HOME]
__getattr__, __dir__ = exports(__name__, _HOME, globals())

# module paths the documentation of earlier versions named -> where that module lives now
_MOVED = {
    "sowmeta.demo_data": "sowmeta.demo.data",
    "sowmeta.feature_moments": "sowmeta.moments.reduce",
    "sowmeta.jpeg_quality": "sowmeta.data.jpeg_quality",
    "sowmeta.metrics": "sowmeta.evaluation.metrics",
    "sowmeta.preprocess": "sowmeta.models.preprocess",
    "sowmeta.sketch": "sowmeta.synth.sketch",
    "sowmeta.synthdata": "sowmeta.data.image_sets",
    "sowmeta.taps": "sowmeta.models.taps",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module that now lives elsewhere (the same object, not a copy)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in _MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = import_module(_MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import system gives the module this spec next; exec_module gives its own back
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its own name."""
        module.__spec__ = module.__spec__.loader_state


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def _from_registry(name: str, **options: Any) -> Any:
    from .registry import from_pretrained

    return from_pretrained(name, **options)


_pretrained.connect(_from_registry)  # Bundle.from_pretrained is the registry's; the bundle room never imports it
