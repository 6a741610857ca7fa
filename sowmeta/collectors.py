"""Collectors: record per-layer, per-class feature moments (paper Sections 3.2-3.3).

* ``collect``: after training, one pass of the model over a labelled dataset (Scenario A).
* ``TrainingCollector``: during training, fed with each batch's labels by the user's loop.
* ``collect_seeds``: from a few seed images per class (Scenario B) or one (Scenario C).

Under ``torchrun`` each rank reads its shard and the partial moments are merged with
``torch.distributed`` collectives, so the result equals a single-process run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .bn_moments import recording_taps
from .bundle import Bundle, ModelRecord, SourceRecord
from .class_folders import map_class_folders
from .data import folder_loader, plan_loader, raise_if_strict, read_image, scan_image_folder
from .distributed import rank_world
from .devices import check_device
from .errors import ConfigError, DataError, SeedRejectedError, TapError
from .fuse import fuse_bn
from .jpeg_quality import compression_note, compression_record, first_per_class
from .logits import logits_of
from .models import CUSTOM_ARCHITECTURE, LoadedModel, fingerprint, is_code_reference, structure_fingerprint
from .outputs import check_output
from .preprocess import Preprocessing
from .stats import ClassMoments, LabelGroups, RowMoments, per_image_moments
from .taps import Tap, infer_axis, probe, resolve_taps

__all__ = ["StatsRecorder", "TrainingCollector", "CollectReport", "collect", "collect_seeds", "seed_files"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class StatsRecorder:
    """Owns the tap hooks and the per-tap ``ClassMoments``; the labels of the current batch are set by the caller.

    Each tap's per-image moments are kept until the batch ends (the next ``set_labels``, or
    reading ``moments``) and then folded into the per-class moments of every tap at once: one
    set of float64 operations over all taps' channels side by side instead of one per tap, which
    for a 55-tap network is most of what the bookkeeping costs.
    """

    def __init__(self, model: nn.Module, taps: Sequence[Tap], num_classes: int) -> None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be positive, not {num_classes}")
        self.model = model
        self.taps = list(taps)
        self.num_classes = num_classes
        self.labels: torch.Tensor | None = None
        self._groups: LabelGroups | None = None
        self._fired: set[str] = set()
        self._joint: ClassMoments | None = None  # every joint tap's channels side by side
        self._columns: dict[str, tuple[int, int]] = {}  # tap -> its channels in _joint
        self._positions: torch.Tensor | None = None  # positions per column of _joint, as last folded
        self._positions_key: tuple[int, ...] | None = None  # positions per joint tap behind _positions
        self._loose: dict[str, ClassMoments] = {}  # taps folded one by one (those not in _joint)
        self._pending: list[tuple[str, torch.Tensor, torch.Tensor, int]] = []

    def allocate(self, channels: Mapping[str, int], device: torch.device | str = "cpu") -> None:
        """Start every tap in ``channels`` with empty moments, in one block folded at once (replaces what was recorded)."""
        self.reset()
        total = sum(channels.values())
        self._joint = ClassMoments.zeros(self.num_classes, total, device=device)
        start = 0
        for name, c in channels.items():
            self._columns[name] = (start, start + c)
            start += c

    @property
    def moments(self) -> dict[str, ClassMoments]:
        """Per-tap moments recorded so far (the batch in progress folded in first)."""
        self._flush()
        out = {name: self._joint.columns(a, b) for name, (a, b) in self._columns.items()} if self._joint is not None else {}
        out.update(self._loose)
        return out

    def _axis(self, tap: Tap, x: torch.Tensor) -> int:
        """The tap's channel axis; an undecided one is decided from the first feature seen (``taps.infer_axis``)."""
        if tap.axis is not None:
            return tap.axis
        axis = infer_axis(self.model.get_submodule(tap.module), x.shape)
        self.taps = [replace(t, axis=axis) if t.name == tap.name else t for t in self.taps]
        return axis

    def _record(self, tap: Tap, x: torch.Tensor, moments: RowMoments | None = None) -> None:
        if self.labels is None:
            return
        if tap.name in self._fired:
            raise TapError(
                f"tap {tap.name!r} ran twice for one batch of labels: its module is called more than once per forward "
                "(a shared ReLU?) or the model ran twice inside one observe() block; tap a module that runs once"
            )
        self._fired.add(tap.name)
        with torch.no_grad():
            feat = x.detach()
            if feat.shape[0] != self.labels.shape[0]:
                raise DataError(f"tap {tap.name!r}: batch of {feat.shape[0]} features but {self.labels.shape[0]} labels")
            axis = self._axis(tap, feat)
            img_mean, img_m2, p = per_image_moments(feat, axis, moments)
            self._pending.append((tap.name, img_mean, img_m2, p))

    def _flush(self) -> None:
        """Fold the per-image moments of the batch in progress into the per-class moments."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        labels = self.labels
        if labels is None:
            raise DataError("per-image moments are pending but the batch's labels were cleared first")
        if self._joint is None and not self._loose:
            self.allocate({name: mean.shape[1] for name, mean, _, _ in pending}, pending[0][1].device)
        dev = self._joint.mean.device if self._joint is not None else pending[0][1].device
        if self._groups is None or self._groups.present.device != dev:
            self._groups = LabelGroups.of(labels, dev)
        by_name = {name: (mean, m2, p) for name, mean, m2, p in pending}
        if self._joint is not None and by_name.keys() >= self._columns.keys() and all(
            by_name[n][0].shape[1] == b - a for n, (a, b) in self._columns.items()
        ):
            joint = list(self._columns)
            positions = self._joint_positions([by_name[n][2] for n in joint])
            mean = torch.cat([by_name[n][0].to(dev) for n in joint], dim=1)
            m2 = torch.cat([by_name[n][1].to(dev) for n in joint], dim=1)
            self._joint.fold(mean, m2, positions, self._groups)
            rest = [(n, *by_name[n]) for n in by_name if n not in self._columns]
        else:
            self._split()
            rest = [(n, *by_name[n]) for n in by_name]
        for name, mean, m2, p in rest:
            m = self._loose.get(name)
            if m is None:
                m = self._loose[name] = ClassMoments.zeros(self.num_classes, mean.shape[1], device=dev)
            m.fold(mean, m2, p, self._groups)

    def _joint_positions(self, counts: list[int]) -> torch.Tensor:
        """Positions per column of the joint block, float64 (rebuilt only when a tap's position count changes)."""
        key = tuple(counts)
        if self._positions is None or self._positions_key != key:
            widths = torch.tensor([b - a for a, b in self._columns.values()])
            self._positions_key = key
            self._positions = torch.repeat_interleave(torch.tensor(counts, dtype=torch.float64), widths).to(self._joint.mean.device)  # type: ignore[union-attr]
        return self._positions

    def _split(self) -> None:
        """Give every joint tap moments of its own (a batch missed some of them, or a tap changed width)."""
        if self._joint is None:
            return
        for name, (a, b) in self._columns.items():
            part = self._joint.columns(a, b)
            self._loose[name] = part.clone()
        self._joint, self._columns, self._positions = None, {}, None

    @contextmanager
    def hooks(self) -> Iterator[StatsRecorder]:
        """Register the hooks for the duration of the block (removed on exit, even on errors).

        BatchNorm-input taps on the CPU record through the fused kernel (``bn_moments``), which
        reads each map once for the BatchNorm and its moments; the others through hooks.
        """
        with recording_taps(self.model, self.taps, self._record):
            yield self

    def set_labels(self, labels: torch.Tensor | None) -> None:
        """The class of every image in the next forward pass (None: record nothing); ends the batch in progress."""
        self._flush()
        if labels is not None:
            labels = labels.detach().to(torch.int64)
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise DataError(f"labels must lie in 0..{self.num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
        self.labels = labels
        self._groups = None
        self._fired.clear()

    def reduce(self) -> None:
        """Merge moments across ranks when torch.distributed is initialised."""
        import torch.distributed as dist

        self._flush()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in self.taps:
                if t.name not in self._columns and t.name not in self._loose:
                    raise ConfigError(f"tap {t.name!r} recorded nothing on rank {dist.get_rank()}: shard too small?")
            if self._joint is not None:
                self._joint.all_reduce()
            for name in sorted(self._loose):
                self._loose[name].all_reduce()

    def reset(self) -> None:
        """Forget everything recorded so far (e.g. at the start of the last training epoch)."""
        self._pending.clear()
        self._joint, self._columns, self._positions, self._loose = None, {}, None, {}


class TrainingCollector:
    """Record statistics inside the user's own training loop (Scenario A proper).

    It never changes the forward result or the gradients: features are detached and reduced
    under ``no_grad``. Example::

        collector = TrainingCollector(model, num_classes=10)
        for x, y in loader:
            with collector.observe(y):
                loss = F.cross_entropy(model(x), y)
            loss.backward(); opt.step(); opt.zero_grad()
        bundle = collector.to_bundle(architecture="my-net", labels=classes, preprocessing=prep)
    """

    def __init__(self, model: nn.Module, *, num_classes: int, taps: str | Sequence[str] = "auto", prefix_tokens: int = 0) -> None:
        self.model = model
        self.recorder = StatsRecorder(model, resolve_taps(model, taps, prefix_tokens=prefix_tokens), num_classes)

    @contextmanager
    def observe(self, labels: torch.Tensor) -> Iterator[None]:
        """Record the forward passes inside the block as belonging to ``labels``."""
        self.recorder.set_labels(labels)
        try:
            with self.recorder.hooks():
                yield
        finally:
            self.recorder.set_labels(None)

    def reset(self) -> None:
        """Drop what was recorded (collect only the last epoch, when the weights have settled)."""
        self.recorder.reset()

    def to_bundle(
        self,
        *,
        architecture: str,
        preprocessing: Preprocessing,
        labels: Sequence[str] | None = None,
        weights: str | None = None,
        data: str = "training loop",
    ) -> Bundle:
        """Freeze what was recorded into a Scenario-A bundle of the model's current weights."""
        k = self.recorder.num_classes
        if labels is not None and len(labels) != k:
            raise ConfigError(f"{len(labels)} labels given for {k} classes; pass one label per class (index = class)")
        self.recorder.reduce()
        record = _model_record(architecture, self.model, k, list(labels or [str(i) for i in range(k)]), weights=weights)
        source = SourceRecord("A", "during-training", data, 0)
        # In training, each batch's normalization (and dropout, and the moving weights) shifts whole images'
        # features, which inflates how much the images' means differ (twice as much at the demo's last tap).
        return Bundle.from_moments(
            self.recorder.moments, self.recorder.taps, model=record, preprocessing=preprocessing, source=source, image_var=False
        )


@dataclass
class CollectReport:
    """What a collection run saw besides the statistics."""

    images: int = 0
    skipped: list[str] = field(default_factory=list)
    rejected: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0


def _prepare(model: LoadedModel, fuse: bool, device: torch.device) -> tuple[nn.Module, bool]:
    module = model.module
    if fuse:
        crop = model.preprocessing.crop
        module = fuse_bn(module, torch.rand(1, 3, crop, crop))
    return module.to(device).eval(), fuse


def _model_record(
    name: str, module: nn.Module, num_classes: int, labels: list[str], *, weights: str | None, fused: bool = False,
    base_model: str | None = None, args: dict[str, Any] | None = None, weights_sha256: str | None = None,
) -> ModelRecord:
    """What a manifest says about the model: a user's ``module:factory`` is recorded as ``custom`` (never code to run)."""
    code = is_code_reference(name)
    return ModelRecord(
        architecture=CUSTOM_ARCHITECTURE if code else name,
        fingerprint=fingerprint(module),
        num_classes=num_classes,
        labels=labels,
        weights=weights,
        fused=fused,
        base_model=base_model,
        structure=structure_fingerprint(module),
        factory=name if code else None,
        args=dict(args or {}),
        weights_sha256=weights_sha256,
    )


def _check_base_model(model: LoadedModel) -> None:
    if model.base_model is not None:
        from .registry.records import check_repo_id

        try:
            check_repo_id(model.base_model)
        except ConfigError:
            raise ConfigError(f"--base-model {model.base_model!r} is not a Hub model id; use ORG/NAME") from None


def _record_for(model: LoadedModel, module: nn.Module, fused: bool, labels: Sequence[str], num_classes: int) -> ModelRecord:
    return _model_record(model.name, module, num_classes, list(labels), weights=model.weights, fused=fused, base_model=model.base_model,
                         args=model.args, weights_sha256=model.weights_sha256)


def _data_name(dataset: str | None, data: object) -> str:
    """What the manifest says the data was: the name given, else the folder's base name (never a machine's path)."""
    if dataset is not None:
        if not dataset.strip() or len(dataset) > 200:
            raise ConfigError(f"--dataset {dataset!r} is not a usable name; pass a short name such as cifar10 or imagenet-1k")
        return dataset.strip()
    if isinstance(data, DataLoader):
        return type(data.dataset).__name__
    if isinstance(data, Mapping):
        return "seed files"
    return Path(data).resolve().name or "data"


def _labels_for(model: LoadedModel, outputs: int) -> list[str]:
    """One label per output: the model's own, else the class indices."""
    if model.labels and len(model.labels) == outputs:
        return list(model.labels)
    return [str(i) for i in range(outputs)]


def _save(bundle: Bundle, out: str | Path | None, overwrite: bool, dtype: str, shard_bytes: int | None) -> None:
    if out is not None:
        kwargs = {"shard_bytes": shard_bytes} if shard_bytes is not None else {}
        bundle.save(out, overwrite=overwrite, dtype=dtype, **kwargs)


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
            (``sowmeta.class_folders``): the model's labels, indices, ``NNN_label`` or ImageNet
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
    _check_base_model(model)
    if out is not None:
        check_output(out, "bundle", overwrite=overwrite, inputs=[("--data", folder)])
    dev = check_device(device)
    module, fused = _prepare(model, fuse, dev)
    crop = model.preprocessing.crop
    found = probe(module, resolve_taps(module, taps, prefix_tokens=prefix_tokens), crop, device=dev)
    tap_list = found.taps
    outputs = found.outputs
    rank, world = rank_world()
    report = CollectReport()
    labels = _labels_for(model, outputs)
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
            _note_compression(sampled, notice)
        samples = [(p, mapping.indices[y]) for p, y in index.samples][rank::world]
        prep = model.preprocessing
        plan = plan_loader(crop, dev, batch_size=batch_size, workers=workers, resize=prep.resize, interpolation=prep.interpolation)
        loader = folder_loader(samples, prep, plan)
        total = len(samples)
    data_name = _data_name(dataset, data)
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
        raise DataError(f"no image of {data_name} could be read; nothing was collected")
    report.seconds = time.perf_counter() - start
    if report.skipped:
        log.warning("skipped %d undecodable images (first: %s)", len(report.skipped), report.skipped[0])
    source = SourceRecord(
        scenario="A",
        collector="after-training",
        data=data_name,
        images=report.images,
        images_per_class_limit=limit_per_class,
        skipped_images=len(report.skipped),
        compression=compression,
    )
    bundle = Bundle.from_moments(
        recorder.moments, tap_list, model=_record_for(model, module, fused, labels, outputs), preprocessing=model.preprocessing, source=source
    )
    if rank == 0:
        _save(bundle, out, overwrite, dtype, shard_bytes)
    return bundle, report


def _note_compression(paths: Sequence[Path], notice: Callable[[str], None] | None) -> None:
    """Tell the user when the images are JPEGs compressed enough to show in the statistics."""
    note = compression_note(paths)
    if note is None:
        return
    if notice is not None:
        notice(note)
    else:
        log.warning(note)


def seed_files(seeds: str | Path | Mapping[int, Sequence[str | Path]], classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(file, class index) of every seed: folders are named by class label, index or ``NNN_label``."""
    if isinstance(seeds, Mapping):
        bad = [k for k in seeds if isinstance(k, bool) or not isinstance(k, int)]
        if bad:
            raise DataError(f"seed mapping keys are class indices (int), not {bad[0]!r}; map labels with the model's labels first")
        if any(isinstance(paths, (str, Path)) for paths in seeds.values()):
            raise DataError("seed mapping values are lists of image files, not one path; wrap a single seed in a list")
        return [(Path(p), k) for k, paths in seeds.items() for p in paths]
    index = scan_image_folder(seeds)
    mapping = map_class_folders(index.classes, classes, len(classes), allow_position=False, what="seed folder")
    return [(path, mapping.indices[label]) for path, label in index.samples]


def collect_seeds(
    model: LoadedModel,
    seeds: str | Path | Mapping[int, Sequence[str | Path]],
    *,
    taps: str | Sequence[str] = "auto",
    fuse: bool = False,
    keep_rejected: bool = False,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    prefix_tokens: int = 0,
    dataset: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    dtype: str = "float32",
    shard_bytes: int | None = None,
    progress: Progress | None = None,
    notice: Callable[[str], None] | None = None,
) -> tuple[Bundle, CollectReport]:
    """Statistics from a few seed images per class: Scenario B (several) or C (one per class).

    Every seed is inference-checked: the model's prediction must equal its class. Rejected
    seeds are reported and excluded unless ``keep_rejected``. Seeds are read, checked and
    recorded a batch at a time, so 50 seeds of each of 1,000 classes need no more memory than one batch.

    Args:
        seeds: a folder ``seeds/<label or index>/<image>``, or a mapping class index -> files.
        batch_size: seeds per forward pass (default: ``sowmeta.data.plan_loader``'s for the input size and device).
        out: also save the bundle there (checked first; never inside ``seeds``).
        progress: called with (seeds done, seeds total) after every batch.
        notice: called with a one-line note (e.g. that the seeds are heavily compressed JPEGs); else logged.
    """
    _check_base_model(model)
    if out is not None:
        check_output(out, "bundle", overwrite=overwrite, inputs=[("--seeds", None if isinstance(seeds, Mapping) else seeds)])
    dev = check_device(device)
    module, fused = _prepare(model, fuse, dev)
    crop = model.preprocessing.crop
    found = probe(module, resolve_taps(module, taps, prefix_tokens=prefix_tokens), crop, device=dev)
    tap_list, outputs = found.taps, found.outputs
    labels = _labels_for(model, outputs)
    items = seed_files(seeds, labels)
    if not items:
        raise DataError("no seed images given")
    for path, k in items:
        if not 0 <= k < outputs:
            raise DataError(f"seed {path}: class {k} is outside the model's {outputs} outputs")
    sampled = first_per_class(items)
    _note_compression(sampled, notice)
    step = plan_loader(crop, dev, batch_size=batch_size).batch_size
    transform = model.preprocessing.transform()
    report = CollectReport()
    recorder = StatsRecorder(module, tap_list, outputs)
    recorder.allocate(found.channels, dev)
    kept = torch.zeros(outputs, dtype=torch.int64)
    with recorder.hooks(), torch.no_grad():
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            x = torch.stack([_read_seed(path, transform) for path, _ in chunk]).to(dev)
            y = torch.tensor([k for _, k in chunk], device=dev)
            recorder.set_labels(y if keep_rejected else None)  # kept either way: record in the checking pass
            pred = logits_of(module(x)).argmax(dim=1)
            wrong = pred != y
            for i in wrong.nonzero().flatten().tolist():
                report.rejected.append({"path": str(chunk[i][0]), "class": chunk[i][1], "predicted": int(pred[i])})
                log.info("seed %s of class %d is predicted as %d", chunk[i][0], chunk[i][1], int(pred[i]))
            if not keep_rejected:
                x, y = x[~wrong], y[~wrong]
                if len(y):
                    recorder.set_labels(y)
                    module(x)
            kept += torch.bincount(y.cpu(), minlength=outputs)
            if progress is not None:
                progress(start + len(chunk), len(items))
    recorder.set_labels(None)
    if report.rejected:
        what = "kept (keep_rejected)" if keep_rejected else "left out"
        log.warning("%d of %d seeds are predicted as another class and were %s", len(report.rejected), len(items), what)
    if not int(kept.sum()):
        raise SeedRejectedError(
            f"all {len(items)} seeds were rejected (the model predicts another class); use other seeds or keep_rejected=True"
        )
    scenario = "C" if int(kept.max()) == 1 else "B"
    report.images = int(kept.sum())
    source = SourceRecord(
        scenario=scenario,
        collector="seeds",
        data=_data_name(dataset, seeds),
        images=report.images,
        rejected_seeds=report.rejected,
        compression=compression_record(sampled),
    )
    bundle = Bundle.from_moments(
        recorder.moments, tap_list, model=_record_for(model, module, fused, labels, outputs), preprocessing=model.preprocessing, source=source
    )
    _save(bundle, out, overwrite, dtype, shard_bytes)
    return bundle, report


def _read_seed(path: Path, transform: Callable) -> torch.Tensor:
    """One seed image, preprocessed; an undecodable seed is an error (seeds are chosen, not skipped)."""
    try:
        return transform(read_image(path))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode seed image {path} ({exc}); replace it") from exc
