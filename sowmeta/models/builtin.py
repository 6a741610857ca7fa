"""The built-in model names (``cifar-resnet20`` ... ``cifar-resnet110``, ``cifar-vgg``, ``cifar-vit``, ``demo-cnn``) and ``register_model``."""

from __future__ import annotations

from typing import Any

from collections.abc import Callable

from ..errors import WeightsError
from ..named import Registry
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from .loaded import LoadedModel
from .networks import CIFAR10_LABELS, CifarResNet, CifarVGG, CifarViT, DemoCNN
from .sources import MODEL_SOURCES, refuse_args
from .weights import load_into

__all__ = ["Builder", "BUILTIN_MODELS", "register_model", "BuiltinSource"]

Builder = Callable[[str, "str | None", "int | None"], LoadedModel]
BUILTIN_MODELS: Registry[Builder] = Registry("model")


def register_model(name: str, *, replace: bool = False) -> Callable[[Builder], Builder]:
    """Register a builder ``(name, weights, num_classes) -> LoadedModel`` under ``name`` (usable from the CLI and manifests)."""
    return BUILTIN_MODELS.register(name, replace=replace)


class BuiltinSource:
    """The names registered with ``register_model``."""

    runs_code = False

    def claims(self, name: str) -> bool:
        return name in BUILTIN_MODELS

    def build(self, name: str, weights: str | None, num_classes: int | None, args: dict[str, Any]) -> LoadedModel:
        refuse_args(name, args)
        return BUILTIN_MODELS.get(name)(name, weights, num_classes)

    def names(self) -> list[str]:
        return sorted(BUILTIN_MODELS)


def _no_default(name: str, weights: str | None, hint: str) -> str | None:
    if weights is not None and weights.upper() == "DEFAULT":
        raise WeightsError(f"{name} has no downloadable weights; pass weights=FILE ({hint}) or weights='none'")
    return weights


def _cifar(module_of: Callable[[int], object], hint: str) -> Builder:
    def build(name: str, weights: str | None, num_classes: int | None) -> LoadedModel:
        module = module_of(num_classes or 10)
        if _no_default(name, weights, hint) is not None:
            load_into(module, weights)  # type: ignore[arg-type]
        labels = list(CIFAR10_LABELS) if (num_classes or 10) == 10 else None
        prep = Preprocessing(crop=32, resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, source=name)
        return LoadedModel(module, name, weights, num_classes or 10, labels, prep)  # type: ignore[arg-type]

    return build


for _depth in (20, 32, 44, 56, 110):
    register_model(f"cifar-resnet{_depth}")(
        _cifar(lambda k, d=_depth: CifarResNet(d, k), "e.g. ../shared/models/cifar10/resnet56.safetensors")
    )
register_model("cifar-vgg")(_cifar(CifarVGG, "docs/results.md says how to train one"))
register_model("cifar-vit")(_cifar(CifarViT, "docs/results.md says how to train one"))


@register_model("demo-cnn")
def _demo(name: str, weights: str | None, num_classes: int | None) -> LoadedModel:
    module = DemoCNN(num_classes or 4)
    if _no_default(name, weights, "the file `sowmeta demo` wrote") is not None:
        load_into(module, weights)  # type: ignore[arg-type]
    prep = Preprocessing(crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), source=name)
    return LoadedModel(module, name, weights, num_classes or 4, None, prep)


MODEL_SOURCES.register("builtin", BuiltinSource())
