"""Stage 1, *resolve*: a located bundle and a model become a ``SynthJob`` — everything checked before any work.

The bundle reference was made a verified directory once, before this stage (``registry.locate_bundle``,
whose result carries the manifest); nothing here reads the manifest or hashes a file again. The
bundle is read and verified before a model is built from what its manifest names; the
model is checked against the bundle (taps, channels, classes, structure, weights unless
``check_fingerprint`` is off); the outputs are checked for writability; the target statistics
of the mode are built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..data import class_names
from ..bundle import Bundle, Manifest
from ..errors import ConfigError, SynthesisError, TapError
from ..bundle.model import load_model_for
from ..models import LoadedModel, load_model
from ..outputs import check_output
from ..models.preprocess import Preprocessing
from ..registry import PullResult, locate_bundle
from ..models.taps import resolve_taps
from .config import SynthConfig
from .engine import TapTarget, tap_weights
from .terms import Term, check_terms

__all__ = ["SynthJob", "ModelAndBundle", "open_model", "resolve_job", "resolve_classes", "build_targets"]

log = logging.getLogger(__name__)


@dataclass
class SynthJob:
    """A checked model, its bundle rows for the classes asked for, and the target statistics of the mode."""

    model: LoadedModel
    manifest: Manifest | None
    bundle: Bundle | None
    source: dict[str, str]  # bundle, bundle_revision, bundle_commit: what the output file records
    labels: list[str]
    classes: list[int]
    preprocessing: Preprocessing
    config: SynthConfig
    targets: list[TapTarget]
    row_of: Callable[[int], int]
    terms: tuple[Term, ...] = ()  # the user's, after the paper's (``synth.terms``)


@dataclass
class ModelAndBundle:
    """A located, verified bundle (if any) and the model to use with it."""

    located: PullResult | None
    manifest: Manifest | None
    model: LoadedModel

    @property
    def crop(self) -> int:
        """The input size images are synthesized at."""
        return (self.manifest.preprocessing if self.manifest else self.model.preprocessing).crop


def open_model(
    bundle: PullResult | str | Path | None, *, model: str | None = None, weights: str | None = None,
    args: dict[str, Any] | None = None, registry: str | Path | None = None, notice: Callable[[str], None] | None = None,
) -> ModelAndBundle:
    """The bundle (pulled if a registry name, files verified) and its model: ``model``/``weights`` as the user gave
    them, else the model the manifest names (``bundle.load_model_for``: never code, never a file it names).

    ``notice`` gets one line before weights the bundle names are downloaded (default: a logged warning)."""
    if bundle is None:
        if model is None:
            raise ConfigError("pass --bundle, or --model with --mode di")
        return ModelAndBundle(None, None, load_model(model, weights="DEFAULT" if weights is None else weights, args=args))
    located = locate_bundle(bundle, registry=registry)  # a PullResult from locate_bundle is taken as it is
    manifest: Manifest = located.manifest  # type: ignore[assignment]  (locate_bundle always fills it)
    if model is None and weights is None:
        weights = weights_beside(located, manifest, notice)
    return ModelAndBundle(located, manifest, load_model_for(manifest, model=model, weights=weights, args=args, notice=notice))


def weights_beside(located: PullResult, manifest: Manifest, notice: Callable[[str], None] | None = None) -> str | None:
    """The weights file a manifest names by file name, found in the bundle's own Hub repository (root, then the
    bundle's folder) as an ``hf://`` reference pinned to the pulled commit; None when it is not there.

    The file's sha256 is checked against the manifest when the model is built (``load_model_for``).
    """
    m = manifest.model
    if located.backend != "hub" or not m.weights or not m.weights_sha256 or "/" in m.weights or m.weights.startswith("hf://"):
        return None
    from ..errors import RegistryError
    from ..hub.client import fetch_file
    from ..registry.records import repo_and_subfolder

    repo, sub = repo_and_subfolder(located.name)
    (notice or log.warning)(
        f"the bundle names the weights {m.weights} (sha256 {m.weights_sha256[:12]}...): fetching them from its repository {repo} "
        "on the Hugging Face Hub unless cached (pass weights=FILE to use your own)"
    )
    for path in [m.weights, *([f"{sub}/{m.weights}"] if sub else [])]:
        try:
            fetch_file(repo, path, revision=located.commit)
        except RegistryError:
            continue
        return f"hf://{repo}@{located.commit}/{path}"
    return None


def _source(bundle: Bundle | PullResult | None) -> tuple[Manifest | None, Path | None, dict[str, str], Bundle | None]:
    """The manifest, directory, provenance (what the output file records) and in-memory bundle of what was located."""
    source = {"bundle": "", "bundle_revision": "", "bundle_commit": ""}
    if isinstance(bundle, Bundle):
        source["bundle"] = str(bundle.path or "<in memory>")
        return bundle.manifest, bundle.path, source, bundle
    if bundle is None:
        return None, None, source, None
    located = locate_bundle(bundle)  # read here only when a backend did not pass its manifest on
    source = {"bundle": located.name, "bundle_revision": located.revision, "bundle_commit": located.commit}
    return located.manifest, located.path, source, None


def resolve_job(
    bundle: Bundle | PullResult | None,
    model: LoadedModel | None,
    *,
    classes: Sequence[int | str] | None,
    config: SynthConfig,
    out: str | Path | None = None,
    overwrite: bool = False,
    init_images: str | Path | None = None,
    terms: Sequence[Term] = (),
) -> SynthJob:
    """Everything a run needs, resolved and checked (see the module docstring); ``bundle`` is what
    ``registry.locate_bundle`` returned (never a name: it was located once, before)."""
    if config.init == "images" and init_images is None:
        raise ConfigError("init 'images' needs a folder of initial images (--init DIR)")
    manifest, path, source, loaded = _source(bundle)
    if out is not None:
        check_output(out, "synth", overwrite=overwrite, inputs=[("the bundle", path), ("--init", init_images)])
    if manifest is None and model is None:
        raise ConfigError("without a bundle, pass the model (--model) to synthesize from")
    if config.mode != "di" and manifest is None:
        raise ConfigError(f"mode {config.mode} needs a bundle; pass --bundle (or use --mode di)")
    num_classes = manifest.model.num_classes if manifest else model.num_classes  # type: ignore[union-attr]
    labels = list((manifest.model.labels if manifest else model.labels) or [str(i) for i in range(num_classes)])  # type: ignore[union-attr]
    wanted = resolve_classes(classes, labels, num_classes)
    if manifest is not None and config.mode != "di":
        if loaded is None or any(c not in loaded.classes for c in wanted):
            loaded = Bundle.load(path, classes=wanted, manifest=manifest)  # type: ignore[arg-type]
        if config.mode == "cc":
            loaded.require_statistics(wanted)
    if model is None:
        model = load_model_for(manifest)  # type: ignore[arg-type]
    if loaded is not None and config.mode != "di":
        device = next(model.module.parameters(), None)
        loaded.check(model.module, check_weights=config.check_fingerprint, device=device.device if device is not None else "cpu")
    targets, row_of = build_targets(config.mode, model.module, loaded if config.mode != "di" else None, wanted, config)
    preprocessing = manifest.preprocessing if manifest else model.preprocessing
    return SynthJob(model, manifest, loaded, source, labels, wanted, preprocessing, config, targets, row_of, check_terms(terms))


def resolve_classes(classes: Sequence[int | str] | None, labels: Sequence[str], num_classes: int) -> list[int]:
    """Class indices from indices, label names or ``None`` (all); an ambiguous label is refused (``sowmeta.data.class_names``)."""
    return class_names.resolve_classes(classes, labels, num_classes)


def build_targets(
    mode: str, module: nn.Module, bundle: Bundle | None, classes: list[int], config: SynthConfig
) -> tuple[list[TapTarget], Callable[[int], int]]:
    """Target statistics of every tap for the mode, and the map class -> target row."""
    if mode == "di":
        try:
            taps = resolve_taps(module, "bn-inputs")
        except TapError:
            raise SynthesisError(
                "mode di needs BatchNorm running statistics and this model has no BatchNorm layer "
                "(BN-free or fused); use --mode cc or global with a bundle"
            ) from None
        named = dict(module.named_modules())
        stats = [(named[t.module].running_mean, named[t.module].running_var) for t in taps]
        if any(m is None for m, _ in stats):
            raise SynthesisError("mode di needs BatchNorm running statistics, but a BatchNorm layer does not track them")
        weights = tap_weights(taps, config)
        return [TapTarget(t, m.detach().float()[None], v.detach().float()[None], w) for t, (m, v), w in zip(taps, stats, weights)], lambda c: 0
    if bundle is None:
        raise ConfigError(f"mode {mode} needs a bundle; pass --bundle")
    taps = [t.tap for t in bundle.manifest.taps]
    weights = tap_weights(taps, config)
    targets = []
    for t, w in zip(taps, weights):
        s = bundle.stats[t.name]
        if mode == "cc":
            targets.append(TapTarget(t, s.mean, s.var, w, s.image_var))
        else:
            targets.append(TapTarget(t, s.global_mean[None], s.global_var[None], w))
    if mode == "cc":
        row = {c: i for i, c in enumerate(bundle.classes)}
        return targets, lambda c: row[c]
    return targets, lambda c: 0


