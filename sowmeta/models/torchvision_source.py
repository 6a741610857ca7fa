"""torchvision classifiers by name (``resnet50``), with torchvision's weights enums or a weights file."""

from __future__ import annotations

from typing import Any

import pickle

import torch
from torch import nn

from ..errors import ModelError, WeightsError
from .taps import count_outputs
from .preprocess import Preprocessing
from .loaded import LoadedModel
from .sources import MODEL_SOURCES, refuse_args
from .weights import load_state, load_weights_file, short_error

__all__ = ["TorchvisionSource", "torchvision_weights_names"]


def _names() -> list[str]:
    from torchvision import models as tvm

    return sorted(tvm.list_models(module=tvm))


def torchvision_weights_names(name: str) -> list[str]:
    """The weights enum members of torchvision model ``name`` (``IMAGENET1K_V1``, ...); empty if it has none."""
    from torchvision import models as tvm

    try:
        return list(tvm.get_model_weights(name).__members__)
    except (ValueError, KeyError):
        return []


def _fetch_checked(chosen: object, name: str) -> None:
    """Download (or find in the torch hub cache) torchvision weights and check they load with ``weights_only=True``.

    torchvision itself unpickles its checkpoints with ``weights_only=False``; checking the same
    file first means no arbitrary object is ever unpickled, even from a tampered cache.
    """
    try:
        chosen.get_state_dict(progress=True, check_hash=True, weights_only=True)  # type: ignore[attr-defined]
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"the cached {chosen} checkpoint for {name} holds objects other than tensors; "
            "delete it from $TORCH_HOME/hub/checkpoints and retry, or pass weights=FILE"
        ) from exc
    except Exception as exc:  # network, disk or hash errors: torchvision raises plain exceptions
        raise WeightsError(f"could not fetch {chosen} for {name} ({short_error(exc)}); check the network, or pass weights=FILE or weights='none'") from exc


def _head_classes(module: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """Outputs of the classifier head that ``state`` holds for ``module``'s last Linear layer, if any."""
    heads = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    w = state.get(f"{heads[-1]}.weight") if heads else None
    return int(w.shape[0]) if w is not None and w.dim() == 2 else None


class TorchvisionSource:
    """Every classifier in ``torchvision.models``; weights ``DEFAULT``, an enum member, or a file."""

    runs_code = False

    def claims(self, name: str) -> bool:
        return ":" not in name and name in _names()

    def names(self) -> list[str]:
        return _names()

    def build(self, name: str, weights: str | None, num_classes: int | None, args: dict[str, Any]) -> LoadedModel:
        from torchvision import models as tvm

        refuse_args(name, args)
        try:
            enum = tvm.get_model_weights(name)
        except (ValueError, KeyError) as exc:
            raise ModelError(f"unknown model {name!r}; see `sowmeta models` for names, or use package.module:factory") from exc
        file_weights = weights is not None and weights.upper() != "DEFAULT" and weights not in enum.__members__
        chosen = None
        if weights is not None and not file_weights:
            chosen = enum.DEFAULT if weights.upper() == "DEFAULT" else enum[weights]
        meta_weights = chosen or enum.DEFAULT
        labels = list(meta_weights.meta.get("categories") or []) or None
        state = load_weights_file(str(weights)) if file_weights else None
        if chosen is not None:
            _fetch_checked(chosen, name)
        t = meta_weights.transforms()
        crop = int(t.crop_size[0])

        def build(classes: int | None) -> nn.Module:
            kwargs = {} if classes is None or chosen is not None else {"num_classes": classes}
            try:
                return tvm.get_model(name, weights=chosen, **kwargs)
            except Exception as exc:  # torchvision raises plain errors for download/shape problems
                raise WeightsError(f"could not build {name} with weights {weights} ({short_error(exc)})") from exc

        module = build(num_classes)
        if state is not None:
            head = _head_classes(module, state) if num_classes is None else None
            if head is not None and head != count_outputs(module, crop):
                module = build(head)  # a fine-tuned checkpoint: the head's size says how many classes
            load_state(module, state, str(weights))
        outputs = count_outputs(module, crop)
        if labels is not None and len(labels) != outputs:
            labels = None
        prep = Preprocessing(
            crop=crop,
            resize=int(t.resize_size[0]),
            mean=tuple(t.mean),  # type: ignore[arg-type]
            std=tuple(t.std),  # type: ignore[arg-type]
            interpolation=t.interpolation.value,
            source=f"torchvision:{meta_weights}",
        )
        record = chosen.name if chosen is not None else weights  # DEFAULT recorded as the enum member it means
        return LoadedModel(module, name, record, outputs, labels, prep)


MODEL_SOURCES.register("torchvision", TorchvisionSource())
