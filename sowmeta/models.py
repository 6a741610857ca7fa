"""Models by name: torchvision classifiers, built-in CIFAR ResNets, and ``package.module:factory``.

Weights files are safetensors or torch checkpoints read with ``weights_only=True``: nothing
a user downloads is ever unpickled as arbitrary objects.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelError, WeightsError, first_line
from .manifest import Manifest
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = [
    "LoadedModel",
    "CifarResNet",
    "CifarVGG",
    "DemoCNN",
    "CIFAR10_LABELS",
    "register_model",
    "list_models",
    "load_model",
    "load_model_from_record",
    "load_model_for",
    "is_code_reference",
    "CUSTOM_ARCHITECTURE",
    "load_weights_file",
    "fingerprint",
    "structure_fingerprint",
]

log = logging.getLogger(__name__)

CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


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


# --- CIFAR ResNets (He et al. 2016, section 4.2, option A shortcuts) -----------------


class _PadShortcut(nn.Module):
    """Parameter-free shortcut: every second pixel, channels zero-padded on both sides."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = _PadShortcut((cout - cin) // 2) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images, key-compatible with the public pytorch_resnet_cifar10 weights."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ModelError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), not {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for stage, cout in enumerate((16, 32, 64), start=1):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 1 and i == 0) else 1
                blocks.append(_BasicBlock(cin, cout, stride))
                cin = cout
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class DemoCNN(nn.Module):
    """The demo's small BatchNorm CNN for 32x32 images: three conv-BN-ReLU stages and a linear head."""

    def __init__(self, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x).mean(dim=(2, 3)))


class CifarVGG(nn.Module):
    """A VGG for 32x32 images (VGG-11 layout at half width, BatchNorm): a CNN family other than the ResNets.

    Used as an independent judge of synthesized CIFAR-10 images (benchmarks/train_judge.py trains it).
    """

    LAYOUT = (32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256, "M")

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in self.LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --- the name registry ------------------------------------------------------------------

_Builder = Callable[[str, "str | None", "int | None"], LoadedModel]
_REGISTRY: dict[str, _Builder] = {}


def register_model(name: str) -> Callable[[_Builder], _Builder]:
    """Register a builder ``(name, weights, num_classes) -> LoadedModel`` under ``name``."""

    def deco(fn: _Builder) -> _Builder:
        _REGISTRY[name] = fn
        return fn

    return deco


def _cifar_builder(depth: int) -> _Builder:
    def build(name: str, weights: str | None, num_classes: int | None) -> LoadedModel:
        module = CifarResNet(depth, num_classes or 10)
        if weights is not None and weights.upper() == "DEFAULT":
            raise WeightsError(
                f"{name} has no downloadable weights; pass --weights FILE "
                "(e.g. ../shared/models/cifar10/resnet56.safetensors) or --weights none"
            )
        if weights is not None:
            _load_into(module, weights)
        labels = list(CIFAR10_LABELS) if (num_classes or 10) == 10 else None
        prep = Preprocessing(crop=32, resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, source=name)
        return LoadedModel(module, name, weights, num_classes or 10, labels, prep)

    return build


for _depth in (20, 32, 44, 56, 110):
    register_model(f"cifar-resnet{_depth}")(_cifar_builder(_depth))


@register_model("cifar-vgg")
def _cifar_vgg_builder(name: str, weights: str | None, num_classes: int | None) -> LoadedModel:
    module = CifarVGG(num_classes or 10)
    if weights is not None and weights.upper() == "DEFAULT":
        raise WeightsError(f"{name} has no downloadable weights; pass --weights FILE (benchmarks/train_judge.py makes one) or none")
    if weights is not None:
        _load_into(module, weights)
    labels = list(CIFAR10_LABELS) if (num_classes or 10) == 10 else None
    prep = Preprocessing(crop=32, resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, source=name)
    return LoadedModel(module, name, weights, num_classes or 10, labels, prep)


@register_model("demo-cnn")
def _demo_builder(name: str, weights: str | None, num_classes: int | None) -> LoadedModel:
    module = DemoCNN(num_classes or 4)
    if weights is not None:
        if weights.upper() == "DEFAULT":
            raise WeightsError("demo-cnn has no downloadable weights; pass the file `sowmeta demo` wrote, or none")
        _load_into(module, weights)
    return LoadedModel(module, name, weights, num_classes or 4, None, Preprocessing(crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), source=name))


def _torchvision_names() -> list[str]:
    from torchvision import models as tvm

    return sorted(tvm.list_models(module=tvm))


def list_models(pattern: str = "*") -> list[str]:
    """Names ``load_model`` accepts (built-ins and torchvision classifiers), filtered by a glob."""
    names = sorted(_REGISTRY) + _torchvision_names()
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def _first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (torch's messages run over several)."""
    return first_line(str(exc)) or type(exc).__name__


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
            "delete it from $TORCH_HOME/hub/checkpoints and retry, or pass --weights FILE"
        ) from exc
    except Exception as exc:  # network, disk or hash errors: torchvision raises plain exceptions
        raise WeightsError(f"could not fetch {chosen} for {name} ({_first_line(exc)}); check the network, or pass --weights FILE or none") from exc


def _head_classes(module: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """Outputs of the classifier head that ``state`` holds for ``module``'s last Linear layer, if any."""
    heads = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    w = state.get(f"{heads[-1]}.weight") if heads else None
    return int(w.shape[0]) if w is not None and w.dim() == 2 else None


def _torchvision(name: str, weights: str | None, num_classes: int | None) -> LoadedModel:
    from torchvision import models as tvm

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

    def build(classes: int | None) -> nn.Module:
        kwargs = {} if classes is None or chosen is not None else {"num_classes": classes}
        try:
            return tvm.get_model(name, weights=chosen, **kwargs)
        except Exception as exc:  # torchvision raises plain errors for download/shape problems
            raise WeightsError(f"could not build {name} with weights {weights} ({_first_line(exc)})") from exc

    module = build(num_classes)
    if state is not None:
        head = _head_classes(module, state) if num_classes is None else None
        if head is not None and head != _num_outputs(module):
            module = build(head)  # a fine-tuned checkpoint: the head's size says how many classes
        _load_state(module, state, str(weights))
    out_features = _num_outputs(module)
    if labels is not None and len(labels) != out_features:
        labels = None
    t = meta_weights.transforms()
    prep = Preprocessing(
        crop=int(t.crop_size[0]),
        resize=int(t.resize_size[0]),
        mean=tuple(t.mean),  # type: ignore[arg-type]
        std=tuple(t.std),  # type: ignore[arg-type]
        interpolation=t.interpolation.value,
        source=f"torchvision:{meta_weights}",
    )
    base = None
    return LoadedModel(module, name, weights, out_features, labels, prep, base)


def _factory(name: str, weights: str | None, num_classes: int | None) -> LoadedModel:
    mod_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot import factory {name!r}: {exc}; check PYTHONPATH and the name after ':'") from exc
    module = fn(num_classes) if num_classes is not None else fn()
    if not isinstance(module, nn.Module):
        raise ModelError(f"factory {name!r} returned {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        if weights.upper() == "DEFAULT":
            raise WeightsError(f"factory models have no DEFAULT weights; pass --weights FILE or none for {name}")
        _load_into(module, weights)
    return LoadedModel(module, name, weights, _num_outputs(module), None, Preprocessing(crop=224, resize=256))


def _num_outputs(module: nn.Module) -> int:
    last = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return int(last[-1].out_features) if last else -1


CUSTOM_ARCHITECTURE = "custom"


def is_code_reference(name: str) -> bool:
    """True for ``package.module:factory``: a name that imports and calls Python code."""
    return ":" in name


def _manifest_weights(name: str, weights: str | None) -> str | None:
    """The weights a manifest may make sowmeta fetch: none, DEFAULT, or a torchvision weights name.

    A file path or URL in a manifest is never opened or downloaded: the user passes the file.
    """
    if weights is None or weights.lower() == "none" or weights.upper() == "DEFAULT":
        return weights
    if name not in _REGISTRY:
        from torchvision import models as tvm

        try:
            if weights in tvm.get_model_weights(name).__members__:
                return weights
        except (ValueError, KeyError):
            pass
    raise WeightsError(
        f"the bundle names the weights {Path(weights).name!r}, which sowmeta does not fetch from a manifest; "
        "pass --weights FILE (the file the bundle was recorded with)"
    )


def load_model_from_record(
    architecture: str,
    *,
    recorded_weights: str | None,
    weights: str | None = None,
    num_classes: int | None = None,
    preprocessing: Preprocessing | None = None,
    factory: str | None = None,
) -> LoadedModel:
    """Build the model a bundle's manifest names, trusting nothing in it.

    Only registered names and torchvision classifiers resolve: a manifest never makes sowmeta
    import or call code (``module:factory``, a custom architecture), and its
    ``recorded_weights`` are used only when they are none, DEFAULT or a torchvision weights
    name. ``weights`` given by the caller (the user's ``--weights``) are used as they are.

    Raises:
        ModelError: the architecture names code or is custom; pass the model yourself.
    """
    if architecture == CUSTOM_ARCHITECTURE or is_code_reference(architecture):
        hint = f" --model {factory}" if factory and is_code_reference(factory) else " --model MODULE:FACTORY"
        raise ModelError(
            f"the bundle's model is custom Python code ({factory or architecture!r}), which sowmeta never runs from a manifest; "
            f"pass{hint} --weights FILE yourself"
        )
    if architecture not in _REGISTRY and architecture not in _torchvision_names():
        raise ModelError(f"the bundle names model {architecture!r}, which is not a sowmeta or torchvision model; pass --model yourself")
    if weights is None:
        if recorded_weights is None:
            raise WeightsError(f"the bundle's model {architecture} names no weights; pass --weights FILE (or none)")
        weights = _manifest_weights(architecture, recorded_weights)
    return load_model(architecture, weights=weights, num_classes=num_classes, preprocessing=preprocessing)


def load_model_for(
    manifest: Manifest, *, model: str | None = None, weights: str | None = None, device: torch.device | str = "cpu"
) -> LoadedModel:
    """The model a bundle was recorded on, ready to check or synthesize with.

    ``model``/``weights`` are the user's (``--model``/``--weights``) and are used as given;
    what the manifest names is used only through ``load_model_from_record`` (no code, no
    arbitrary files). The bundle's preprocessing and class count apply; a fused bundle gets the
    model fused the same way.
    """
    m = manifest.model
    if model is not None:
        loaded = load_model(model, weights=weights if weights is not None else _manifest_weights(model, m.weights or "none"),
                            num_classes=m.num_classes, preprocessing=manifest.preprocessing)
    else:
        loaded = load_model_from_record(m.architecture, recorded_weights=m.weights, weights=weights, num_classes=m.num_classes,
                                        preprocessing=manifest.preprocessing, factory=m.factory)
    if m.fused:
        from .fuse import fuse_bn

        crop = manifest.preprocessing.crop
        loaded.module = fuse_bn(loaded.module, torch.rand(1, 3, crop, crop))
    loaded.module.to(device)
    return loaded


def load_model(
    name: str,
    *,
    weights: str | None = "DEFAULT",
    num_classes: int | None = None,
    preprocessing: Preprocessing | None = None,
) -> LoadedModel:
    """Build a model by name and load its weights; the model is returned in eval mode.

    Args:
        name: a registered name (``cifar-resnet56``), a torchvision classifier (``resnet50``),
            or ``package.module:factory``.
        weights: ``"DEFAULT"``, a torchvision weights name, a file (safetensors or torch
            checkpoint), or ``None``/``"none"`` for random initialisation.
        num_classes: output classes, for models built without pretrained weights.
        preprocessing: overrides the preprocessing that comes with the weights.
    """
    if weights is not None and weights.lower() == "none":
        weights = None
    if name in _REGISTRY:
        loaded = _REGISTRY[name](name, weights, num_classes)
    elif ":" in name:
        loaded = _factory(name, weights, num_classes)
    else:
        loaded = _torchvision(name, weights, num_classes)
    if preprocessing is not None:
        loaded.preprocessing = preprocessing
    loaded.module.eval()
    return loaded


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch checkpoint (``weights_only=True``)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file {str(p)!r} does not exist; pass an existing file, DEFAULT, or none")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
            state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"cannot read weights {str(p)!r}: the checkpoint holds pickled objects other than tensors, "
            "which sowmeta never unpickles; save model.state_dict() (or safetensors) instead"
        ) from exc
    except Exception as exc:
        raise WeightsError(f"cannot read weights {str(p)!r} ({_first_line(exc)}); only safetensors or plain tensor checkpoints load") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights {str(p)!r} do not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(module: nn.Module, path: str) -> None:
    _load_state(module, load_weights_file(path), path)


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    own = module.state_dict()
    # num_batches_tracked only drives BatchNorm momentum in training; many published weights omit it.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise WeightsError(
            f"weights {path!r} do not fit the architecture ({what}; {len(missing)} missing, "
            f"{len(unexpected)} unexpected keys); check --model"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise WeightsError(f"weights {path!r}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    module.load_state_dict(state, strict=False)


def fingerprint(module: nn.Module) -> str:
    """sha256 over the state dict: for each key in sorted order, key, dtype, shape, then raw bytes.

    See docs/format.md ("Model fingerprint") for the exact byte layout.
    """
    h = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        header = f"{key}\0{str(t.dtype).removeprefix('torch.')}\0{','.join(str(s) for s in t.shape)}\0"
        h.update(header.encode("utf-8"))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def structure_fingerprint(module: nn.Module) -> str:
    """sha256 over the module tree: every submodule's name and class, every parameter's and buffer's name and shape.

    Independent of the weights' values: two models share it exactly when they are the same
    architecture (see docs/format.md, "Model structure").
    """
    h = hashlib.sha256()
    for name, m in module.named_modules():
        h.update(f"m\0{name}\0{type(m).__module__}.{type(m).__qualname__}\n".encode())
    for key, t in module.state_dict().items():
        h.update(f"t\0{key}\0{','.join(str(s) for s in t.shape)}\n".encode())
    return "sha256:" + h.hexdigest()
