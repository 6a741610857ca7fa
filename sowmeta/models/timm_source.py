"""timm classifiers: ``timm:NAME`` (e.g. ``timm:vit_tiny_patch16_224``), weights from the Hub through sowmeta's client.

Needs the ``timm`` extra (``pip install 'sowmeta[timm]'``). ``--weights DEFAULT`` fetches the
pretrained ``model.safetensors`` that the model's ``pretrained_cfg`` names on the Hub (found in
the Hugging Face cache when it is there); ``none`` is random initialisation; a file is loaded
as any weights file. Preprocessing (input size, crop, interpolation, mean, std) comes from the
model's ``pretrained_cfg``. A timm name runs no user code, so a manifest may name it.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ModelError, WeightsError
from .preprocess import Preprocessing
from .loaded import LoadedModel
from .sources import MODEL_SOURCES
from .weights import load_state, load_weights_file, short_error

__all__ = ["TimmSource", "timm_preprocessing", "timm_labels", "require_timm"]

PREFIX = "timm:"


def require_timm() -> Any:
    """The ``timm`` module, or a one-line error saying how to install it."""
    try:
        import timm
    except ImportError as exc:
        raise ModelError("timm models need the timm extra: pip install 'sowmeta[timm]'") from exc
    return timm


def timm_preprocessing(cfg: dict[str, Any], source: str) -> Preprocessing:
    """Preprocessing from a timm ``pretrained_cfg``: resize to input / crop_pct (timm's rule), centre-crop the input size."""
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    interpolation = str(cfg.get("interpolation") or "bilinear")
    return Preprocessing(
        crop=size,
        resize=max(size, math.floor(size / crop_pct)),
        mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),  # type: ignore[arg-type]
        interpolation=interpolation if interpolation in ("nearest", "bilinear", "bicubic") else "bilinear",
        source=source,
    )


def timm_labels(cfg: dict[str, Any], num_classes: int) -> list[str] | None:
    """Class names: the config's ``label_names``, else ImageNet-1k's (torchvision's short names) for 1000 outputs."""
    names = cfg.get("label_names")
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    if num_classes == 1000:
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.DEFAULT.meta["categories"])
    return None


class TimmSource:
    """``timm:NAME`` for every model ``timm.list_models`` knows (a pretrained tag ``NAME.TAG`` is allowed)."""

    runs_code = False

    def claims(self, name: str) -> bool:
        if not name.startswith(PREFIX):
            return False
        try:
            import timm
        except ImportError:
            return True  # say how to install it, rather than "unknown model"
        rest = name[len(PREFIX):]
        # timm's own functions (timm:create_model) are Python factories; any other name is a timm model, known or not
        return bool(timm.is_model(rest)) or not hasattr(timm, rest)

    def names(self) -> list[str]:
        return []  # thousands: listed only for a pattern that names this source (``search``)

    def search(self, pattern: str) -> list[str]:
        """``timm:`` names matching a glob that starts with ``timm:`` (none when timm is not installed)."""
        if not pattern.startswith(PREFIX):
            return []
        try:
            import timm
        except ImportError:
            return []
        return [PREFIX + n for n in timm.list_models(pattern[len(PREFIX):])]

    def build(self, name: str, weights: str | None, num_classes: int | None, args: dict[str, Any]) -> LoadedModel:
        timm = require_timm()
        arch = name[len(PREFIX):]
        if not timm.is_model(arch):
            import difflib

            close = difflib.get_close_matches(arch, timm.list_models(), n=1)
            raise ModelError(f"unknown timm model {arch!r}" + (f"; did you mean 'timm:{close[0]}'?" if close else "; see timm.list_models()"))
        pretrained = weights is not None and weights.upper() == "DEFAULT"
        kwargs = dict(args) if num_classes is None or pretrained else {**args, "num_classes": num_classes}
        try:
            module = timm.create_model(arch, pretrained=False, **kwargs)
        except Exception as exc:  # timm raises RuntimeError/ValueError for unknown names or arguments
            raise ModelError(f"timm cannot build {arch!r} ({short_error(exc)})") from exc
        cfg = dict(module.pretrained_cfg or {})
        size = args.get("img_size")
        if size is not None:  # a model built for another input size: its pretrained_cfg still names the default one
            side = int(size[-1] if isinstance(size, (list, tuple)) else size)
            cfg["input_size"] = (3, side, side)
        record, sha256 = weights, None
        if pretrained:
            record, sha256 = self._load_pretrained(module, cfg, arch)
        elif weights is not None:
            load_state(module, load_weights_file(weights), weights)
        outputs = int(getattr(module, "num_classes", 0) or cfg.get("num_classes") or 0)
        return LoadedModel(module, name, record, outputs, timm_labels(cfg, outputs), timm_preprocessing(cfg, name), weights_sha256=sha256)

    @staticmethod
    def _load_pretrained(module: Any, cfg: dict[str, Any], arch: str) -> tuple[str, str]:
        """Load the weights ``pretrained_cfg`` names on the Hub; their portable reference ``hf://REPO@COMMIT/FILE`` and sha256."""
        from .weights_ref import resolve_weights

        repo = cfg.get("hf_hub_id")
        if not repo:
            raise WeightsError(f"timm has no Hub weights for {arch}; pass weights=FILE or weights='none'")
        ref = resolve_weights(f"hf://{repo}/{cfg.get('hf_hub_filename') or 'model.safetensors'}")
        load_state(module, load_weights_file(ref.path), ref.portable)
        return ref.portable, ref.sha256


MODEL_SOURCES.register("timm", TimmSource())
