"""``hf-hub:ORG/NAME[@REV]``: a timm or transformers image classifier repository on the Hugging Face Hub.

The repository is recognised from its ``config.json``: timm's (``architecture``, ``pretrained_cfg``)
or transformers' (``architectures``, ``model_type``, with ``preprocessor_config.json``). Files
come through sowmeta's Hub client into the standard Hugging Face cache; only safetensors
weights are read, and no code from the repository ever runs (timm builds a registered
architecture by name; transformers loads a built-in class, never ``trust_remote_code``). The
model's name records the resolved commit, so a manifest rebuilds exactly this model elsewhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelError, WeightsError
from .preprocess import Preprocessing
from .loaded import LoadedModel
from .loading import manifest_args
from .sources import MODEL_SOURCES, refuse_args
from .timm_source import require_timm, timm_labels, timm_preprocessing
from .weights import load_state, load_weights_file, short_error

__all__ = ["HubModelSource", "parse_hub_model"]

PREFIX = "hf-hub:"
_NAME_RE = re.compile(r"^hf-hub:(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")
_FILES = ["config.json", "preprocessor_config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json"]
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def parse_hub_model(name: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME[@REV]`` -> (repo id, revision or None)."""
    match = _NAME_RE.match(name)
    if match is None:
        raise ModelError(f"{name!r} is not a Hub model name; write hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    return match.group("repo"), match.group("rev")


def _transformers_preprocessing(folder: Path, name: str) -> Preprocessing:
    path = folder / "preprocessor_config.json"
    p: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    size = p.get("size") or {}
    crop_size = p.get("crop_size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crop = int(crop_size.get("height") or size.get("height") or size.get("shortest_edge") or 224)
    # a (height, width) resize squeezes the whole image; the nearest aspect-keeping equivalent is the short side to the crop
    resize = int(size["shortest_edge"]) if size.get("shortest_edge") else crop
    return Preprocessing(
        crop=crop,
        resize=resize,
        mean=tuple(float(v) for v in p.get("image_mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
        std=tuple(float(v) for v in p.get("image_std", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
        interpolation=_RESAMPLE.get(int(p.get("resample", 2)), "bilinear"),
        source=name,
    )


def _transformers_model(folder: Path, config: dict[str, Any], weights: str | None) -> tuple[nn.Module, list[str] | None]:
    try:
        import transformers
    except ImportError as exc:
        raise ModelError("transformers models need the transformers extra: pip install 'sowmeta[transformers]'") from exc
    if config.get("auto_map"):
        raise ModelError("this repository's model needs its own Python code, which sowmeta never runs; use a built-in architecture")
    try:
        cfg = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        if weights is not None and weights.upper() == "DEFAULT":
            module = transformers.AutoModelForImageClassification.from_pretrained(str(folder), config=cfg, use_safetensors=True, trust_remote_code=False)
        else:
            module = transformers.AutoModelForImageClassification.from_config(cfg)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"transformers cannot load this image classifier ({short_error(exc)})") from exc
    id2label = getattr(module.config, "id2label", None) or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)] if id2label else None
    if labels and all(re.fullmatch(r"LABEL_\d+", v) for v in labels):
        labels = None
    return module, labels


class HubModelSource:
    """Image classifiers of the Hub, timm or transformers, by repository id."""

    runs_code = False

    def claims(self, name: str) -> bool:
        return name.startswith(PREFIX)

    def names(self) -> list[str]:
        return []

    def build(self, name: str, weights: str | None, num_classes: int | None, args: dict[str, Any]) -> LoadedModel:
        from ..hub.client import commit_of, fetch_snapshot

        refuse_args(name, args)
        repo, rev = parse_hub_model(name)
        folder = fetch_snapshot(repo, revision=rev, patterns=_FILES)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise ModelError(f"{repo} has no config.json: it is not a timm or transformers model repository")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        resolved = f"{PREFIX}{repo}@{commit_of(folder)}"
        if isinstance(config.get("architecture"), str):
            module, labels, prep = self._timm(folder, config, weights, resolved)
        elif config.get("architectures") or config.get("model_type"):
            module, labels = _transformers_model(folder, config, weights)
            prep = _transformers_preprocessing(folder, resolved)
        else:
            raise ModelError(f"{repo}'s config.json is neither timm's nor transformers'; sowmeta cannot build it")
        if weights is not None and weights.upper() != "DEFAULT":
            load_state(module, load_weights_file(weights), weights)
        record = weights  # DEFAULT: the repository's own weights, pinned by the commit in the model's name
        return LoadedModel(module, resolved, record, num_classes or 0, labels, prep)

    @staticmethod
    def _timm(folder: Path, config: dict[str, Any], weights: str | None, name: str) -> tuple[nn.Module, list[str] | None, Preprocessing]:
        timm = require_timm()
        arch = config["architecture"]
        if not timm.is_model(arch):
            raise ModelError(f"timm has no architecture {arch!r}; upgrade timm or check the repository")
        # the repository's file may not choose files or code paths either
        args = manifest_args(dict(config.get("model_args") or {}), what=f"the model_args of {name}'s config.json", drop=True)
        args.setdefault("num_classes", config.get("num_classes"))
        try:
            module = timm.create_model(arch, pretrained=False, **{k: v for k, v in args.items() if v is not None})
        except Exception as exc:  # timm raises several types for bad arguments
            raise ModelError(f"timm cannot build {arch!r} from the repository's config ({short_error(exc)})") from exc
        if weights is not None and weights.upper() == "DEFAULT":
            files = sorted(folder.glob("model*.safetensors"))
            if not files:
                raise WeightsError(f"{name} has no model.safetensors; pass weights=FILE")
            state: dict[str, Any] = {}
            for f in files:
                state.update(load_weights_file(f))
            load_state(module, state, name)
        cfg = dict(config.get("pretrained_cfg") or {})
        cfg.setdefault("label_names", config.get("label_names"))
        num = int(config.get("num_classes") or cfg.get("num_classes") or 0)
        return module, timm_labels(cfg, num), timm_preprocessing(cfg, name)


MODEL_SOURCES.register("hf-hub", HubModelSource())
