"""``collect_seeds``: statistics from a few inference-checked seed images per class, Scenario B or C (paper Sec. 3.3)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..bundle import Bundle, SourceRecord
from ..data.folders import plan_loader, read_image, seed_files
from ..data.jpeg_quality import compression_record, first_per_class
from ..devices import check_device
from ..errors import DataError, SeedRejectedError
from ..logits import logits_of
from ..models import LoadedModel
from ..models.taps import probe, resolve_taps
from ..outputs import check_output
from .options import CollectOptions
from .private import refuse_privacy
from .recorder import StatsRecorder
from .records import CollectReport, Progress, check_base_model, data_name, labels_for, note_compression, prepare, record_for, save

__all__ = ["collect_seeds"]

log = logging.getLogger(__name__)


def _checked_seeds(seeds: str | Path | Mapping[int, Sequence[str | Path]], labels: list[str]) -> list[tuple[Path, int]]:
    items = seed_files(seeds, labels)
    if not items:
        raise DataError("no seed images given")
    for path, k in items:
        if not 0 <= k < len(labels):
            raise DataError(f"seed {path}: class {k} is outside the model's {len(labels)} outputs")
    return items


def _check_and_record(module: nn.Module, recorder: StatsRecorder, items: list[tuple[Path, int]], model: LoadedModel, dev: torch.device,
                      o: CollectOptions, report: CollectReport, progress: Progress | None) -> torch.Tensor:
    """Seeds read, checked (the model's prediction must be their class) and recorded a batch at a time; images kept per class."""
    outputs = recorder.num_classes
    step = plan_loader(model.preprocessing.crop, dev, batch_size=o.batch_size).batch_size
    transform = model.preprocessing.transform()
    kept = torch.zeros(outputs, dtype=torch.int64)
    with recorder.hooks(), torch.no_grad():
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            x = torch.stack([_read_seed(path, transform) for path, _ in chunk]).to(dev)
            y = torch.tensor([k for _, k in chunk], device=dev)
            recorder.set_labels(y if o.keep_rejected else None)  # kept either way: record in the checking pass
            pred = logits_of(module(x)).argmax(dim=1)
            wrong = pred != y
            for i in wrong.nonzero().flatten().tolist():
                report.rejected.append({"path": str(chunk[i][0]), "class": chunk[i][1], "predicted": int(pred[i])})
                log.info("seed %s of class %d is predicted as %d", chunk[i][0], chunk[i][1], int(pred[i]))
            if not o.keep_rejected:
                x, y = x[~wrong], y[~wrong]
                if len(y):
                    recorder.set_labels(y)
                    module(x)
            kept += torch.bincount(y.cpu(), minlength=outputs)
            if progress is not None:
                progress(start + len(chunk), len(items))
    recorder.set_labels(None)
    return kept


def collect_seeds(
    model: LoadedModel,
    seeds: str | Path | Mapping[int, Sequence[str | Path]],
    options: CollectOptions | None = None,
    *,
    progress: Progress | None = None,
    notice: Callable[[str], None] | None = None,
    **overrides: Any,
) -> tuple[Bundle, CollectReport]:
    """Statistics from a few seed images per class: Scenario B (several) or C (one per class).

    Every seed is inference-checked: the model's prediction must equal its class. Rejected
    seeds are reported and excluded unless ``keep_rejected``. Seeds are read, checked and
    recorded a batch at a time, so 50 seeds of each of 1,000 classes need no more memory than one batch.

    Args:
        seeds: a folder ``seeds/<label or index>/<image>``, or a mapping class index -> files.
        options: as for ``collect`` (``CollectOptions``; its fields also as keywords); ``batch_size`` counts seeds
            per forward pass, ``keep_rejected`` keeps misclassified seeds, and the options for folders of a
            dataset (``workers``, ``limit_per_class``, ``strict``, ``labels_by_position``) do not apply.
        progress: called with (seeds done, seeds total) after every batch.
        notice: called with a one-line note (e.g. that the seeds are heavily compressed JPEGs); else logged.
    """
    o = CollectOptions.of(options, overrides, what="collect_seeds")
    refuse_privacy(o, "seed images (Scenario B or C)")
    check_base_model(model)
    if o.out is not None:
        check_output(o.out, "bundle", overwrite=o.overwrite, inputs=[("--seeds", None if isinstance(seeds, Mapping) else seeds)])
    dev = check_device(o.device)
    module, fused = prepare(model, o.fuse, dev)
    found = probe(module, resolve_taps(module, o.taps, prefix_tokens=o.prefix_tokens), model.preprocessing.crop, device=dev)
    labels = labels_for(model, found.outputs)
    items = _checked_seeds(seeds, labels)
    sampled = first_per_class(items)
    note_compression(sampled, notice)
    report = CollectReport()
    recorder = StatsRecorder(module, found.taps, found.outputs)
    recorder.allocate(found.channels, dev)
    kept = _check_and_record(module, recorder, items, model, dev, o, report, progress)
    if report.rejected:
        what = "kept (keep_rejected)" if o.keep_rejected else "left out"
        log.warning("%d of %d seeds are predicted as another class and were %s", len(report.rejected), len(items), what)
    if not int(kept.sum()):
        raise SeedRejectedError(
            f"all {len(items)} seeds were rejected (the model predicts another class); use other seeds or keep_rejected=True"
        )
    report.images = int(kept.sum())
    source = SourceRecord(scenario="C" if int(kept.max()) == 1 else "B", collector="seeds", data=data_name(o.dataset, seeds),
                          images=report.images, rejected_seeds=report.rejected, compression=compression_record(sampled))
    bundle = Bundle.from_moments(recorder.moments, found.taps, model=record_for(model, module, fused, labels, found.outputs),
                                 preprocessing=model.preprocessing, source=source)
    save(bundle, o)
    return bundle, report


def _read_seed(path: Path, transform: Callable) -> torch.Tensor:
    """One seed image, preprocessed; an undecodable seed is an error (seeds are chosen, not skipped)."""
    try:
        return transform(read_image(path))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode seed image {path} ({exc}); replace it") from exc
