"""``collect``: Scenario A after training, one pass of the model over a labelled dataset (paper Sec. 3.2).

Under ``torchrun`` each rank reads its shard and the partial moments are merged with
``torch.distributed`` collectives, so the result equals a single-process run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
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
from .recorder import StatsRecorder
from .records import CollectReport, Progress, check_base_model, data_name, labels_for, note_compression, prepare, record_for, save

__all__ = ["collect"]

log = logging.getLogger(__name__)


def collect(
    model: LoadedModel,
    data: str | Path | DataLoader,
    *,
    taps: str | Sequence[str] = "auto",
    fuse: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str | torch.device = "cpu",
    limit_per_class: int | None = None,
    strict: bool = False,
    labels_by_position: bool = False,
    prefix_tokens: int = 0,
    dataset: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    dtype: str = "float32",
    shard_bytes: int | None = None,
    progress: Progress | None = None,
    notice: Callable[[str], None] | None = None,
) -> tuple[Bundle, CollectReport]:
    """One pass of ``model`` over a labelled dataset: a Scenario-A bundle (paper Sec. 3.2).

    Args:
        model: from ``load_model``; its preprocessing is applied to folder images.
        data: an ImageFolder-style directory, or a DataLoader yielding (images, labels)
            already preprocessed. Folders are matched to classes by name
            (``sowmeta.data.class_folders``): the model's labels, indices, ``NNN_label`` or ImageNet
            WordNet ids; a subset of the classes is fine (the others get no statistics).
        taps: ``auto``, ``bn-inputs``, ``conv-outputs`` or module names/globs.
        fuse: fold BatchNorm into the convolutions first (inference-optimized model).
        batch_size, workers: images per forward pass and decoding processes for a folder; None
            (default): ``sowmeta.data.plan_loader``'s choice for the cores and device there are.
        limit_per_class: use only the first N images (by file name) of each class.
        strict: fail on the first undecodable image instead of skipping and counting it.
        labels_by_position: map folders to classes by sorted order even when their names mean nothing.
        prefix_tokens: leading positions of token-sequence taps left out (a ViT's class token: 1).
        dataset: the data's name for the manifest and card (default: the folder's base name).
        out: also save the bundle there; checked before the pass (never inside ``data``).
        overwrite, dtype, shard_bytes: passed to ``Bundle.save`` with ``out``.
        progress: called with (images done, images total) after every batch.
        notice: called with a one-line note (e.g. that folders were mapped by sorted order).

    Returns:
        The bundle and a report of skipped images.
    """
    folder = None if isinstance(data, DataLoader) else Path(data)
    check_base_model(model)
    if out is not None:
        check_output(out, "bundle", overwrite=overwrite, inputs=[("--data", folder)])
    dev = check_device(device)
    module, fused = prepare(model, fuse, dev)
    crop = model.preprocessing.crop
    found = probe(module, resolve_taps(module, taps, prefix_tokens=prefix_tokens), crop, device=dev)
    tap_list = found.taps
    outputs = found.outputs
    rank, world = rank_world()
    report = CollectReport()
    labels = labels_for(model, outputs)
    if isinstance(data, DataLoader):
        if limit_per_class is not None:
            raise ConfigError(
                "limit_per_class applies to image folders; limit a DataLoader's dataset yourself (torch.utils.data.Subset)"
            )
        loader: Iterable = data
        total = len(data.dataset) if hasattr(data.dataset, "__len__") else 0  # type: ignore[arg-type]
        samples = None
        compression = None  # a DataLoader's storage is not ours to see
    else:
        index = scan_image_folder(data, limit_per_class)
        mapping = map_class_folders(index.classes, model.labels, outputs, by_position=labels_by_position)
        if mapping.note and notice is not None and rank == 0:
            notice(mapping.note)
        if not model.labels or len(model.labels) != outputs:
            for i, (folder_name, k) in enumerate(zip(index.classes, mapping.indices)):
                labels[k] = mapping.label_of(i, folder_name)
        sampled = first_per_class(index.samples)
        compression = compression_record(sampled)
        if rank == 0:
            note_compression(sampled, notice)
        samples = [(p, mapping.indices[y]) for p, y in index.samples][rank::world]
        prep = model.preprocessing
        plan = plan_loader(crop, dev, batch_size=batch_size, workers=workers, resize=prep.resize, interpolation=prep.interpolation)
        loader = folder_loader(samples, prep, plan)
        total = len(samples)
    named = data_name(dataset, data)
    recorder = StatsRecorder(module, tap_list, outputs)
    # Every tap starts with empty moments, so a rank whose shard is empty (or all undecodable)
    # still takes part in the merge instead of leaving the other ranks waiting.
    recorder.allocate(found.channels, dev)
    start = time.perf_counter()
    done = 0
    with recorder.hooks(), torch.no_grad():
        for batch in loader:
            if samples is not None:
                x, y, bad = batch
                raise_if_strict(bad, samples, strict)
                report.skipped += [str(samples[i][0]) for i in bad]
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
                progress(done, total)
    recorder.set_labels(None)
    recorder.reduce()
    if world > 1:  # every rank skipped its own files: the report and the manifest list them all
        import torch.distributed as dist

        parts: list[list[str]] = [[] for _ in range(world)]
        dist.all_gather_object(parts, report.skipped)
        report.skipped = [p for part in parts for p in part]
    report.images = int(next(iter(recorder.moments.values())).images.sum())
    if report.images == 0:
        raise DataError(f"no image of {named} could be read; nothing was collected")
    report.seconds = time.perf_counter() - start
    if report.skipped:
        log.warning("skipped %d undecodable images (first: %s)", len(report.skipped), report.skipped[0])
    source = SourceRecord(
        scenario="A",
        collector="after-training",
        data=named,
        images=report.images,
        images_per_class_limit=limit_per_class,
        skipped_images=len(report.skipped),
        compression=compression,
    )
    bundle = Bundle.from_moments(
        recorder.moments, tap_list, model=record_for(model, module, fused, labels, outputs), preprocessing=model.preprocessing, source=source
    )
    if rank == 0:
        save(bundle, out, overwrite, dtype, shard_bytes)
    return bundle, report
