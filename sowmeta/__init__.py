"""sowmeta: release class-conditional feature statistics with a classifier, and synthesize images from it.

The data flows one way: collect -> bundle -> registry -> synth -> evaluate / distill.
"""

from __future__ import annotations

from . import errors
from .bundle import Bundle, Manifest, ModelRecord, SourceRecord, TapRecord, TapStats
from .collect import CollectReport, TrainingCollector, collect, collect_seeds
from .distill import DistillConfig, DistillResult, distill
from .errors import SowmetaError
from .evaluate import EvaluationReport, evaluate
from .fuse import fuse_bn
from .models import LoadedModel, fingerprint, list_models, load_model, register_model
from .preprocess import Preprocessing
from .stats import ClassMoments
from .synth import SynthConfig, SynthProgress, SynthResult, synthesize
from .taps import Tap, resolve_taps, tap_hooks
from .version import __version__

__all__ = [
    "__version__",
    "errors",
    "SowmetaError",
    # models
    "LoadedModel",
    "load_model",
    "list_models",
    "register_model",
    "fingerprint",
    "fuse_bn",
    "Preprocessing",
    # statistics and collection
    "Tap",
    "resolve_taps",
    "tap_hooks",
    "ClassMoments",
    "collect",
    "collect_seeds",
    "TrainingCollector",
    "CollectReport",
    # bundles
    "Bundle",
    "Manifest",
    "ModelRecord",
    "SourceRecord",
    "TapRecord",
    "TapStats",
    # synthesis
    "SynthConfig",
    "SynthResult",
    "SynthProgress",
    "synthesize",
    # evaluation and distillation
    "evaluate",
    "EvaluationReport",
    "distill",
    "DistillConfig",
    "DistillResult",
]
