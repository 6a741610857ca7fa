"""``synthesize``: a model plus its bundle in, a dataset of images of chosen classes out (the four stages in order).

Four stages, each in its own module, with data passed forward: *resolve* (``job``: bundle,
model and checks), *plan* (``plan``: batches, seeds, initial images), *run* (``run``: the
``Inverter`` over this process's batches) and *sink* (``sinks``: memory or the HDF5 file).
Under torchrun, rank r takes batches r, r + world, ... and rank 0 merges the shards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..bundle import Bundle
from ..distributed import device_for_rank, is_main_process, process_group
from ..errors import ConfigError
from ..data.jpeg_quality import source_compression_note
from ..models import LoadedModel
from ..registry import PullResult, locate_bundle
from .canvas import Canvas
from .config import SynthConfig
from .job import SynthJob, build_targets, resolve_classes, resolve_job
from .plan import plan_run
from .results import SynthProgress, SynthResult
from .run import run_batches
from .sinks import HDF5Sink, MemorySink, Sink
from .terms import Term

__all__ = ["synthesize", "SynthResult", "SynthProgress", "resolve_classes", "build_targets"]

log = logging.getLogger(__name__)


def synthesize(
    bundle: Bundle | PullResult | str | Path | None,
    model: LoadedModel | None = None,
    *,
    classes: Sequence[int | str] | None = None,
    per_class: int = 50,
    config: SynthConfig | None = None,
    out: str | Path | None = None,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    init_images: str | Path | None = None,
    registry: str | Path | None = None,
    sink: Sink | None = None,
    progress: Callable[[SynthProgress], None] | None = None,
    notice: Callable[[str], None] | None = None,
    terms: Sequence[Term] = (),
) -> SynthResult:
    """Synthesize ``per_class`` images of every class in ``classes``.

    Args:
        bundle: a ``Bundle``, a bundle directory, a registry name ``org/name[@revision]``
            (pulled on demand) or what ``registry.locate_bundle`` returned; may be None in mode
            ``di``, which needs only the model. The file records its name, revision and commit.
        model: the classifier; default the one the bundle's manifest names (never code, see
            ``bundle.load_model_for``). It must be the model the bundle was recorded on (checked).
        classes: class indices or labels; default all classes.
        per_class: images per class.
        config: the objective and schedule (default: the preset ``auto`` picks for the model's input size, as the CLI's
            ``--preset auto``: ``SynthConfig.cifar()`` to 64 px, else ``SynthConfig.imagenet()``).
        out: the HDF5 file to write; None keeps the images in memory (single process only).
            An unfinished ``out`` (``out.partial``) with the same settings is resumed.
        device: where to optimize (``cuda`` picks the local rank's GPU under torchrun).
        overwrite: replace ``out`` (only a sowmeta synthesis file) and discard any unfinished run of it.
        init_images: a folder ``<label or index>/<image>`` of initial images (seeds or sketches)
            for ``config.init == "images"``.
        registry: the registry to pull a bundle name from (see ``sowmeta.registry``).
        sink: where batches go instead of ``out``/memory (any ``sinks.Sink``).
        progress: called after every reported iteration and every batch.
        notice: called with a one-line note (that the bundle's statistics come from JPEGs
            compressed enough to show, or that ``config.jpeg_quality`` differs from theirs); else logged.
        terms: terms of your own (``Term(name, weight, value)``, ``value`` a function of a ``Step``),
            added to the paper's objective; their names and weights are part of what a resumed run must match.

    Example:
        >>> result = synthesize("org/cifar-resnet56-cc", per_class=50, config=SynthConfig.cifar(), out="synth.h5")  # doctest: +SKIP
    """
    started = time.perf_counter()
    located = bundle if bundle is None or isinstance(bundle, Bundle) else locate_bundle(bundle, registry=registry)  # once, here
    config = config or _auto_config(model, located)
    job = resolve_job(located, model, classes=classes, config=config, out=out, overwrite=overwrite, init_images=init_images,
                      terms=terms)
    Canvas.of_size(job.preprocessing.crop, job.preprocessing.crop, config.canvas_margin)  # fails before anything is written
    _note(job, notice)
    plan = plan_run(job, per_class, init_images)
    with process_group(device) as (rank, world):
        if world > 1 and out is None and sink is None:
            raise ConfigError("under torchrun, pass an output file (--out)")
        chosen = sink or (HDF5Sink(out, overwrite=overwrite, rank=rank, world=world) if out is not None else MemorySink())
        resumed = run_batches(job, plan, chosen, device=device_for_rank(device, world), rank=rank, world=world, progress=progress)
        return chosen.finish(job, plan, time.perf_counter() - started, resumed)


def _auto_config(model: LoadedModel | None, located: Bundle | PullResult | None) -> SynthConfig:
    """The preset ``auto`` picks for the model's input size (the bundle's without a model): cifar to 64 px, else imagenet."""
    manifest = getattr(located, "manifest", None)
    crop = model.preprocessing.crop if model is not None else manifest.preprocessing.crop if manifest is not None else None
    return SynthConfig() if crop is None else SynthConfig.preset("auto", crop=crop)


def _note(job: SynthJob, notice: Callable[[str], None] | None) -> None:
    """Say when the statistics carry their JPEGs' compression (the images will show it), and when the
    spread term was asked for but the bundle holds no image spread (older format, or recorded in training)."""
    cc = job.manifest is not None and job.config.mode == "cc"
    notes = [source_compression_note(job.manifest.source.compression if cc else None, job.config.jpeg_quality)]  # type: ignore[union-attr]
    if cc and job.config.alpha_cc and job.config.alpha_image_var and not job.manifest.has_image_var:  # type: ignore[union-attr]
        why, fix = (
            ("recorded during training, where batch statistics shift whole images", "collect one after training (`sowmeta collect`)")
            if job.manifest.source.collector == "during-training"  # type: ignore[union-attr]
            else ("written before format 1.3", "collect it again with this sowmeta")
        )
        notes.append(
            f"this bundle holds no spread of its images' means ({why}), so the images of a class will vary less "
            f"in tone than real ones; {fix} to use --alpha-image-var"
        )
    if not is_main_process():
        return
    for note in filter(None, notes):
        if notice is not None:
            notice(note)
        else:
            log.warning(note)
