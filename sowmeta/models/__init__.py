"""Models by name: built-in CIFAR networks, torchvision classifiers, ``package.module:factory``, and any
source registered in ``MODEL_SOURCES`` (docs/architecture.md shows how to add one)."""

from . import builtin as _builtin  # noqa: F401  (registers the sources)
from . import hub_source as _hub  # noqa: F401
from . import python_source as _python  # noqa: F401
from . import timm_source as _timm  # noqa: F401
from . import torchvision_source as _torchvision  # noqa: F401
from .builtin import BUILTIN_MODELS, register_model
from .loaded import LoadedModel
from .loading import CUSTOM_ARCHITECTURE, fetch_note, list_models, load_model, load_model_from_record, manifest_weights, parse_model_args
from .networks import CIFAR10_LABELS, CifarResNet, CifarVGG, DemoCNN
from .python_source import is_code_reference
from .sources import MODEL_SOURCES, ModelSource, source_for
from .weights import fingerprint, load_into, load_state, load_weights_file, structure_fingerprint

__all__ = [
    "LoadedModel",
    "CifarResNet",
    "CifarVGG",
    "DemoCNN",
    "CIFAR10_LABELS",
    "MODEL_SOURCES",
    "ModelSource",
    "BUILTIN_MODELS",
    "register_model",
    "source_for",
    "list_models",
    "load_model",
    "load_model_from_record",
    "manifest_weights",
    "parse_model_args",
    "fetch_note",
    "is_code_reference",
    "CUSTOM_ARCHITECTURE",
    "load_weights_file",
    "load_state",
    "load_into",
    "fingerprint",
    "structure_fingerprint",
]
