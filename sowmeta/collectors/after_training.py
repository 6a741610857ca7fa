"""``collect``: Scenario A after training, one pass of the model over a labelled dataset (paper Sec. 3.2).

Under ``torchrun`` each rank reads its shard and the partial moments are merged with
``torch.distributed`` collectives, so the result equals a single-process run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..bundle import Bundle, SourceRecord
from ..data.class_folders import map_class_folders
from ..data.folders import folder_loader, plan_loader, raise_if_strict, scan_image_folder
from ..data.jpeg_quality import compression_record, first_per_class
from ..devices import check_device
from ..distributed import rank_world
from ..errors import ConfigError, DataError
from ..models import LoadedModel
from ..models.taps import probe, resolve_taps
from ..outputs import check_output
from .options import CollectOptions
from .private import PrivateRecorder, plan_privacy
from .recorder import StatsRecorder
from .records import CollectReport, Progress, check_base_model, data_name, labels_for, note_compression, prepare, record_for, save

__all__ = ["collect"]

log = logging.getLogger(__name__)


@dataclass
class _Source:
    """The batches of one pass and what the manifest says about them."""

    loader: Iterable
    total: int  # images this rank reads
    samples: list[tuple[Path, int]] | None  # (file, class) of a folder's images, for skipped files; None for a DataLoader
    compression: dict[str, Any] | None  # how the sampled files were stored; None when not ours to see


def _loader_source(data: DataLoader, o: CollectOptions) -> _Source:
    if o.limit_per_class is not None:
        raise ConfigError("limit_per_class applies to image folders; limit a DataLoader's dataset yourself (torch.utils.data.Subset)")
    total = len(data.dataset) if hasattr(data.dataset, "__len__") else 0  # type: ignore[arg-type]
    return _Source(data, total, None, None)


def _folder_source(model: LoadedModel, data: str | Path, o: CollectOptions, labels: list[str], dev: torch.device,
                   notice: Callable[[str], None] | None) -> _Source:
    """A folder's images, classes matched by name (``labels`` gets the folders' names where the model has none), this rank's shard."""
    rank, world = rank_world()
    outputs = len(labels)
    index = scan_image_folder(data, o.limit_per_class)
    mapping = map_class_folders(index.classes, model.labels, outputs, by_position=o.labels_by_position)
    if mapping.note and notice is not None and rank == 0:
        notice(mapping.note)
    if not model.labels or len(model.labels) != outputs:
        for i, (folder_name, k) in enumerate(zip(index.classes, mapping.indices)):
            labels[k] = mapping.label_of(i, folder_name)
    sampled = first_per_class(index.samples)
    if rank == 0:
        note_compression(sampled, notice)
    samples = [(p, mapping.indices[y]) for p, y in index.samples][rank::world]
    prep = model.preprocessing
    plan = plan_loader(prep.crop, dev, batch_size=o.batch_size, workers=o.workers, resize=prep.resize, interpolation=prep.interpolation)
    return _Source(folder_loader(samples, prep, plan), len(samples), samples, compression_record(sampled))


def _one_pass(module: nn.Module, recorder: StatsRecorder, source: _Source, dev: torch.device, o: CollectOptions, report: CollectReport,
              progress: Progress | None) -> None:
    """Every batch through the model with its labels set; undecodable files counted (or, strict, refused)."""
    outputs, done = recorder.num_classes, 0
    with recorder.hooks(), torch.no_grad():
        for batch in source.loader:
            if source.samples is not None:
                x, y, bad = batch
                raise_if_strict(bad, source.samples, o.strict)
                report.skipped += [str(source.samples[i][0]) for i in bad]
                done += len(bad)
            else:
                x, y = batch[0], batch[1]
            if x is not None and len(y):
                if int(y.max()) >= outputs or int(y.min()) < 0:
                    raise DataError(f"label {int(y.max())} is outside the model's {outputs} outputs")
                recorder.set_labels(y.to(dev))
                module(x.to(dev, non_blocking=True))
                done += len(y)
            if progress is not None:
                progress(done, source.total)
    recorder.set_labels(None)
    recorder.reduce()


def _all_skipped(skipped: list[str], world: int) -> list[str]:
    """Every rank skipped its own files: the report and the manifest list them all."""
    if world == 1:
        return skipped
    import torch.distributed as dist

    parts: list[list[str]] = [[] for _ in range(world)]
    dist.all_gather_object(parts, skipped)
    return [p for part in parts for p in part]


def collect(
    model: LoadedModel,
    data: str | Path | DataLoader,
    options: CollectOptions | None = None,
    *,
    progress: Progress | None = None,
    notice: Callable[[str], None] | None = None,
    **overrides: Any,
) -> tuple[Bundle, CollectReport]:
    """One pass of ``model`` over a labelled dataset: a Scenario-A bundle (paper Sec. 3.2).

    Args:
        model: from ``load_model``; its preprocessing is applied to folder images.
        data: an ImageFolder-style directory, or a DataLoader yielding (images, labels)
            already preprocessed. Folders are matched to classes by name
            (``sowmeta.data.class_folders``): the model's labels, indices, ``NNN_label`` or ImageNet
            WordNet ids; a subset of the classes is fine (the others get no statistics).
        options: taps, batch size, output and the rest (``CollectOptions``); each of its fields may also
            be given as a keyword (``taps="bn-inputs", out="bundles/b"``), which wins.
        progress: called with (images done, images total) after every batch.
        notice: called with a one-line note (e.g. that folders were mapped by sorted order).

    Returns:
        The bundle and a report of skipped images.
    """
    o = CollectOptions.of(options, overrides, what="collect")
    check_base_model(model)
    if o.out is not None:
        check_output(o.out, "bundle", overwrite=o.overwrite, inputs=[("--data", None if isinstance(data, DataLoader) else Path(data))])
    dev = check_device(o.device)
    module, fused = prepare(model, o.fuse, dev)
    found = probe(module, resolve_taps(module, o.taps, prefix_tokens=o.prefix_tokens), model.preprocessing.crop, device=dev)
    labels = labels_for(model, found.outputs)
    source = _loader_source(data, o) if isinstance(data, DataLoader) else _folder_source(model, data, o, labels, dev, notice)
    named = data_name(o.dataset, data)
    privacy = plan_privacy(o, module, found.taps)
    recorder = StatsRecorder(module, found.taps, found.outputs) if privacy is None else PrivateRecorder(module, found.taps, found.outputs, privacy)
    # Every tap starts with empty moments, so a rank whose shard is empty (or all undecodable)
    # still takes part in the merge instead of leaving the other ranks waiting.
    recorder.allocate(found.channels, dev)
    report, start = CollectReport(), time.perf_counter()
    _one_pass(module, recorder, source, dev, o, report, progress)
    rank, world = rank_world()
    report.skipped = _all_skipped(report.skipped, world)
    moments = recorder.moments if privacy is None else recorder.release()  # type: ignore[attr-defined]
    report.images = int(next(iter(moments.values())).images.sum())  # with privacy, the noisy count released
    if report.images == 0:
        raise DataError(f"no image of {named} could be read; nothing was collected")
    report.seconds = time.perf_counter() - start
    if report.skipped:
        log.warning("skipped %d undecodable images (first: %s)", len(report.skipped), report.skipped[0])
    source_record = SourceRecord(scenario="A", collector="after-training", data=named, images=report.images, images_per_class_limit=o.limit_per_class,
                                 skipped_images=len(report.skipped), compression=source.compression)
    if privacy is not None:  # counts and compression read from particular files are not released under the guarantee
        source_record = replace(source_record, skipped_images=0, compression=None, privacy=privacy.record(recorder.sums.sensitivity))  # type: ignore[attr-defined]
    bundle = Bundle.from_moments(moments, found.taps, model=record_for(model, module, fused, labels, found.outputs),
                                 preprocessing=model.preprocessing, source=source_record)
    if rank == 0:
        save(bundle, o)
    return bundle, report
