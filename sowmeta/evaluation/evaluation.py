"""Score an image set (a synthesis file or a class-per-folder directory) with named networks.

One report holds every score, and every score names the network that computed it:

- top-1 accuracy of each given classifier, overall and per class;
- an Inception-Score-style score, from the softmax of the first given classifier;
- Fréchet distance and KID between the features of the set and of a reference folder of real
  images, overall and (Fréchet) per class;
- within-class diversity (mean pairwise feature distance), of the set and of the reference;
- every figure's floor: per class, KID and Fréchet distance of the set *and of as many held-out
  real images* against the rest of the reference, at equal sizes, and each classifier's top-1
  on those held-out real images (``ClassDistances``, ``AccuracyScore.real_top1``).

Features come from ``feature_model`` when given (e.g. Inception-V3), else from the first given
classifier's penultimate layer (``metrics.default_feature_model``): never from whatever happens
to be cached, so one call gives the same numbers on every machine; the report names the network.
Each image set goes through each network once; every score is computed from those passes.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from ..data.class_names import resolve_classes
from ..data.folders import default_workers
from ..devices import check_device
from ..errors import ConfigError, DataError
from ..data.jpeg_quality import REFERENCE_CONSEQUENCE, compression_note, first_per_class
from .metrics import (
    Outputs,
    class_diversity,
    default_feature_model,
    frechet_distance,
    inception_score,
    inception_splits,
    kernel_distance,
    network_name,
    per_class_frechet,
    per_class_kernel_distance,
    run_model,
    split_per_class,
    top1_accuracy,
)
from ..models import LoadedModel
from ..data.image_sets import SynthDataset, SynthInfo, fit_square
from .naturalness import Naturalness, compare_naturalness

__all__ = [
    "AccuracyScore",
    "InceptionScoreResult",
    "DistanceScores",
    "DiversityScore",
    "ClassDistances",
    "EvaluationReport",
    "evaluate",
    "save_class_sheets",
]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""Called with (what is running, images done, images in that pass)."""


@dataclass(frozen=True)
class AccuracyScore:
    """Top-1 accuracy of one classifier on the set: overall, and per class (None for classes without images)."""

    network: str
    top1: float
    per_class: list[float | None]
    real_top1: float | None = None  # on the real images held out of the reference (``ClassDistances``)
    real_per_class: list[float | None] | None = None


@dataclass(frozen=True)
class InceptionScoreResult:
    """exp(E_x KL(p(y|x) || p(y))) from ``network``'s softmax; mean and std over the ``splits`` splits used."""

    network: str
    mean: float
    std: float | None
    splits: int


@dataclass(frozen=True)
class DistanceScores:
    """How far the set's features lie from a reference set's, in ``network``'s feature space.

    ``kid_mean``/``kid_std``: unbiased MMD² with the cubic polynomial kernel over random subsets
    of ``kid_subset_size`` images. ``per_class_frechet`` is None where a class has fewer than two
    images in either set; ``mean_class_frechet`` averages the others.
    """

    network: str
    reference: str
    reference_images: int
    frechet: float
    kid_mean: float
    kid_std: float
    kid_subset_size: int
    per_class_frechet: list[float | None]
    mean_class_frechet: float | None


@dataclass(frozen=True)
class DiversityScore:
    """Mean Euclidean distance between features of two images of the same class (larger: more diverse)."""

    network: str
    per_class: list[float | None]
    mean: float | None
    reference_per_class: list[float | None] | None = None
    reference_mean: float | None = None


@dataclass(frozen=True)
class ClassDistances:
    """Per class, the set and real images against the same real images, at equal sizes: every distance with its floor.

    For class k, ``images[k]`` = min(images of k in the set, half the reference's images of k)
    reference images are held out (seeded); ``kid``/``frechet`` compare as many of the set's
    images (all of them when the set is the smaller) with the rest of the reference's class,
    ``kid_real``/``frechet_real`` compare the held-out real images with that same rest. A set as
    close to real photographs as real photographs are to each other scores its floor. None
    where a class has fewer than 2 images.
    """

    network: str
    images: list[int]
    kid: list[float | None]
    kid_real: list[float | None]
    frechet: list[float | None]
    frechet_real: list[float | None]
    mean_kid: float | None
    mean_kid_real: float | None
    mean_frechet: float | None
    mean_frechet_real: float | None


@dataclass
class NaturalnessFigures:
    """High-frequency power fraction and total variation per pixel of the set and of the reference's images of the same
    classes fitted to the set's size, and their ratios (1: like the real images; ``evaluation.naturalness``)."""

    size: int
    data: Naturalness
    reference: Naturalness
    hf_ratio: float | None
    tv_ratio: float | None


@dataclass
class EvaluationReport:
    """Every score of one image set. Per-class lists are indexed like ``classes``."""

    data: str
    kind: str  # "hdf5" or "folder"
    images: int  # images evaluated (after the class filter)
    classes: list[str]
    counts: list[int]  # images evaluated per class
    accuracy: list[AccuracyScore] = field(default_factory=list)
    inception_score: InceptionScoreResult | None = None
    feature_network: str | None = None
    diversity: DiversityScore | None = None
    distances: DistanceScores | None = None
    class_distances: ClassDistances | None = None
    naturalness: NaturalnessFigures | None = None
    sheets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each, e.g. that the reference images are heavily compressed
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable dictionary (``json.dumps(report.to_dict())``)."""
        return asdict(self)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _class_names(info: SynthInfo, models: Sequence[LoadedModel]) -> list[str]:
    n = len(info.per_class)
    if info.classes is not None:
        return list(info.classes)
    for m in models:
        if m.labels is not None and len(m.labels) >= n:
            return list(m.labels[:n])
    return [str(k) for k in range(n)]


def _resolve_classes(chosen: Sequence[int | str] | None, names: list[str], info: SynthInfo) -> list[int]:
    """Class indices to evaluate: those asked for (indices or names), else every class the set holds."""
    if chosen is None:
        return [k for k, n in enumerate(info.per_class) if n > 0]
    out = resolve_classes(chosen, names, len(names), unique=False, where=str(info.path))
    for k in out:
        if info.per_class[k] == 0:
            raise ConfigError(f"class {names[k]!r} ({k}) has no images in {info.path}; drop it from the classes")
    return sorted(set(out))


def _model_labels(models: Sequence[LoadedModel]) -> list[str] | None:
    """The first model's class labels that exist: class folders are matched to them by name (an HDF5 file carries its own)."""
    return next((list(m.labels) for m in models if m.labels), None)


def _view(data: SynthDataset, model: LoadedModel, keep: list[int] | None) -> Dataset:
    """The set as uint8 images fitted to ``model``'s input size, restricted to classes ``keep``."""
    crop, resize = model.preprocessing.crop, model.preprocessing.resize
    ds = data.with_transform(functools.partial(fit_square, size=crop, resize=resize))
    if keep is None:
        return ds
    mask = torch.isin(ds.labels, torch.tensor(keep, dtype=torch.long))
    return Subset(ds, torch.nonzero(mask).flatten().tolist())


def _check_names(what: str, names: Sequence[str] | None, other: Sequence[str] | None, keep: list[int]) -> None:
    if names is None or other is None:
        return
    for k in keep:
        if k < len(other) and names[k] != other[k]:
            log.warning("class %d is %r in the data but %r in %s; scores assume index %d is the same class", k, names[k], other[k], what, k)
            return


def evaluate(
    data: str | Path,
    models: Sequence[LoadedModel],
    *,
    reference: str | Path | None = None,
    feature_model: LoadedModel | None = None,
    classes: Sequence[int | str] | None = None,
    sheets: str | Path | None = None,
    sheet_size: int = 64,
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Score an image set: accuracy per classifier, IS-style score, FD/KID against real images, diversity.

    Args:
        data: an HDF5 synthesis file or a class-per-folder image directory.
        models: classifiers whose top-1 accuracy is measured; the first one also computes the
            Inception-Score-style score (and the features, when ``feature_model`` is not given).
        reference: a class-per-folder directory of real images (class k = k-th folder in sorted
            order, as in the data). Fréchet distance, KID and per-class Fréchet distance need it.
            Only the reference's images of the evaluated classes are used.
        feature_model: the network whose penultimate features feed FD, KID and diversity
            (default: ``metrics.default_feature_model(models)``).
        classes: class indices or names to evaluate (default: every class the data holds).
        sheets: write one contact sheet per class, ``DIR/<index>-<name>.png``.
        sheet_size: images per contact sheet (8 per row).
        is_splits: splits of the Inception-Score-style score (lowered to the image count, and to
            the number of equal chunks the images make; the report holds the number used).
        kid_subsets: random subsets KID averages over.
        kid_subset_size: images per KID subset (lowered to the smaller set's size).
        batch_size: images per forward pass.
        device: where the networks run.
        workers: processes decoding images (0: in this process; default: chosen for the cores
            there are, ``data.default_workers``).
        seed: seeds the random subsets of IS, KID and diversity.
        progress: called with (stage, images done, images in the stage).

    Returns:
        An ``EvaluationReport``; ``report.to_dict()`` is JSON-ready.

    Example:
        >>> r20 = load_model("cifar-resnet20", weights="resnet20.safetensors")  # doctest: +SKIP
        >>> report = evaluate("synth.h5", [r20], reference="cifar10/test")  # doctest: +SKIP
        >>> report.accuracy[0].top1, report.distances.frechet  # doctest: +SKIP
    """
    start = time.perf_counter()
    path = _checked_data(data, batch_size, sheet_size)
    models = list(models)
    feat = feature_model if feature_model is not None else default_feature_model(models)
    labels, dataset, names, keep = _selection(path, models, classes)
    subset = None if len(keep) == len(names) else keep
    counts = [dataset.info.per_class[k] if k in keep else 0 for k in range(len(names))]

    def stage(what: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(what, done, total))

    workers = default_workers(device) if workers is None else workers
    run = functools.partial(run_model, batch_size=batch_size, device=check_device(device), workers=workers)
    outputs = [run(m, _view(dataset, m, subset), features=m is feat, progress=stage(network_name(m))) for m in models]
    feat_out = next((out for m, out in zip(models, outputs) if m is feat), None)
    if feat_out is None:
        feat_out = run(feat, _view(dataset, feat, subset), features=True, progress=stage(f"features: {network_name(feat)}"))
    assert feat_out.features is not None  # features=True above
    report = EvaluationReport(str(path), dataset.info.kind, int(feat_out.labels.numel()), names, counts, feature_network=feat_out.network)
    _score_classifiers(report, outputs, counts, is_splits=is_splits, seed=seed)
    ref_diversity = None
    if reference is not None:
        passes = _Passes(run, stage, models, outputs, feat, feat_out, labels, names, keep, counts, dataset)
        ref_diversity = _score_against_reference(report, Path(reference), passes, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed)
    report.diversity = _diversity(feat_out, ref_diversity, len(names), seed)
    if sheets is not None:
        report.sheets = [str(p) for p in save_class_sheets(path, sheets, classes=keep, per_sheet=sheet_size, names=names)]
    report.seconds = time.perf_counter() - start
    return report


def _naturalness(data: SynthDataset, reference: SynthDataset, keep: list[int], model: LoadedModel, batch: int = 64) -> NaturalnessFigures:
    """``NaturalnessFigures`` of the evaluated classes: the reference's images are fitted to the set's size as ``model``
    sees images of that size (resized to its ``resize`` in proportion, then centre-cropped)."""
    size = int(data[0][0].shape[-1])
    pp = model.preprocessing
    resize = round(size * pp.resize / pp.crop) if pp.resize else None

    def batches(ds: SynthDataset, fit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[torch.Tensor]:
        wanted = set(keep)
        chosen = [i for i, y in enumerate(ds.labels.tolist()) if y in wanted]
        for start in range(0, len(chosen), batch):
            yield torch.stack([fit(ds[i][0]) for i in chosen[start:start + batch]])

    score = compare_naturalness(batches(data, lambda x: fit_square(x, size)), batches(reference, lambda x: fit_square(x, size, resize=resize)))
    assert score.reference is not None
    return NaturalnessFigures(size, score.data, score.reference, score.hf_ratio, score.tv_ratio)


def _selection(path: Path, models: list[LoadedModel], classes: Sequence[int | str] | None) -> tuple[list[str] | None, SynthDataset, list[str], list[int]]:
    """The models' labels, the data read with them (folders matched by name), its class names, and the classes
    asked for, once every model predicts them."""
    labels = _model_labels(models)
    dataset = SynthDataset(path, names=labels)
    names = _class_names(dataset.info, models)
    keep = _resolve_classes(classes, names, dataset.info)
    if not keep:
        raise DataError(f"{path} holds no images")
    for m in models:
        if len(names) > m.num_classes:
            raise DataError(f"{path} has {len(names)} classes but {network_name(m)} predicts {m.num_classes}; evaluate with a model of these classes")
        _check_names(network_name(m), names, m.labels, keep)
    return labels, dataset, names, keep


def _diversity(out: Outputs, reference: list[float | None] | None, num_classes: int, seed: int) -> DiversityScore:
    """Each class's diversity in the evaluated set's features, beside the reference's when there is one."""
    assert out.features is not None
    diversity = class_diversity(out.features, out.labels, num_classes=num_classes, seed=seed)
    return DiversityScore(out.network, diversity, _mean(diversity), reference, _mean(reference) if reference is not None else None)


def _checked_data(data: str | Path, batch_size: int, sheet_size: int) -> Path:
    """The data's path, once it exists and the sizes asked for are possible."""
    path = Path(data)
    if not path.exists():
        raise DataError(f"{path} does not exist; pass an HDF5 file from `sowmeta synthesize` or a class-per-folder image directory")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, not {batch_size}")
    if sheet_size < 1:
        raise ConfigError(f"sheet_size must be at least 1, not {sheet_size}")
    return path


def _score_classifiers(report: EvaluationReport, outputs: list[Outputs], counts: list[int], *, is_splits: int, seed: int) -> None:
    """Each classifier's top-1 (overall and per class), and the first one's Inception-Score-style score."""
    for out in outputs:
        per = [top1_accuracy(out.logits[out.labels == k], out.labels[out.labels == k]) if counts[k] else None for k in range(len(counts))]
        report.accuracy.append(AccuracyScore(out.network, top1_accuracy(out.logits, out.labels), per))
    if outputs:
        asked = min(is_splits, outputs[0].logits.shape[0])
        mean, std = inception_score(outputs[0].logits, splits=asked, seed=seed)
        report.inception_score = InceptionScoreResult(outputs[0].network, mean, std, inception_splits(outputs[0].logits.shape[0], asked))


@dataclass
class _Passes:
    """The evaluated set's passes through the networks, and how to run one more (what the reference's scores need)."""

    run: Callable[..., Outputs]
    stage: Callable[[str], Callable[[int, int], None] | None]
    models: list[LoadedModel]
    outputs: list[Outputs]
    feat: LoadedModel
    feat_out: Outputs
    labels: list[str] | None
    names: list[str]
    keep: list[int]
    counts: list[int]
    data: SynthDataset


def _score_against_reference(
    report: EvaluationReport, ref_path: Path, p: _Passes, *, kid_subsets: int, kid_subset_size: int, seed: int
) -> list[float | None]:
    """FD, KID and per-class distances against real images, each classifier's top-1 on held-out real ones; the reference's diversity."""
    run, stage, feat, feat_out, names, keep, k_all = p.run, p.stage, p.feat, p.feat_out, p.names, p.keep, len(p.names)
    if not ref_path.is_dir():
        raise DataError(f"reference {ref_path} is not a directory; pass a class-per-folder folder of real images")
    ref_data = SynthDataset(ref_path, names=p.labels)
    ref_info = ref_data.info
    _check_names(f"reference {ref_path}", names, ref_info.classes, keep)
    ref_keep = [k for k in keep if k < len(ref_info.per_class)]
    missing = [names[k] for k in keep if k >= len(ref_info.per_class) or ref_info.per_class[k] == 0]
    if missing:
        log.warning("reference %s has no images of %s; their per-class scores are left out", ref_path, ", ".join(missing[:5]))
    if not any(ref_info.per_class[k] for k in ref_keep):
        raise DataError(f"reference {ref_path} has no images of the evaluated classes; pass real images of the same classes")
    ref_subset = None if ref_keep == list(range(len(ref_info.per_class))) else ref_keep
    note = compression_note(first_per_class(ref_data.samples), "reference images", REFERENCE_CONSEQUENCE)
    if note is not None:
        report.notes.append(note)
    ref = run(feat, _view(ref_data, feat, ref_subset), features=True, progress=stage(f"reference: {network_name(feat)}"))
    assert ref.features is not None
    fd = frechet_distance(ref.features, feat_out.features)
    kid_mean, kid_std, kid_size = kernel_distance(
        ref.features, feat_out.features, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
    )
    per_fd = per_class_frechet(feat_out.features, feat_out.labels, ref.features, ref.labels, num_classes=k_all)
    report.distances = DistanceScores(
        ref.network, str(ref_path), int(ref.labels.numel()), fd, kid_mean, kid_std, kid_size, per_fd, _mean(per_fd)
    )
    ref_diversity = class_diversity(ref.features, ref.labels, num_classes=k_all, seed=seed)
    report.class_distances, held = _class_distances(feat_out, ref, p.counts, kid_subsets=kid_subsets, seed=seed)
    for i, (m, out) in enumerate(zip(p.models, p.outputs)):
        real = ref if m is feat else run(m, Subset(_view(ref_data, m, ref_subset), held.tolist()), progress=stage(f"held-out real: {network_name(m)}"))
        logits, labels = (real.logits[held], real.labels[held]) if m is feat else (real.logits, real.labels)
        per = [top1_accuracy(logits[labels == k], labels[labels == k]) if bool((labels == k).any()) else None for k in range(k_all)]
        report.accuracy[i] = replace(report.accuracy[i], real_top1=top1_accuracy(logits, labels), real_per_class=per)
    report.naturalness = _naturalness(p.data, ref_data, keep, p.models[0] if p.models else feat)
    return ref_diversity


def _class_distances(
    data: Outputs, ref: Outputs, counts: list[int], *, kid_subsets: int, seed: int
) -> tuple[ClassDistances, torch.Tensor]:
    """``ClassDistances`` of a set's features against a reference's; also the reference positions held out."""
    assert data.features is not None and ref.features is not None
    k_all = len(counts)
    ref_counts = torch.bincount(ref.labels, minlength=k_all).tolist()
    sizes = [min(counts[k], ref_counts[k] // 2) for k in range(k_all)]
    held, rest = split_per_class(ref.labels, sizes, seed=seed)
    mine, _ = split_per_class(data.labels, sizes, seed=seed + 1)  # all of a class's images when it is the smaller
    a, la = data.features[mine], data.labels[mine]
    r, lr = ref.features[held], ref.labels[held]
    b, lb = ref.features[rest], ref.labels[rest]
    kid = per_class_kernel_distance(a, la, b, lb, num_classes=k_all, subsets=kid_subsets, seed=seed)
    kid_real = per_class_kernel_distance(r, lr, b, lb, num_classes=k_all, subsets=kid_subsets, seed=seed)
    fd = per_class_frechet(a, la, b, lb, num_classes=k_all)
    fd_real = per_class_frechet(r, lr, b, lb, num_classes=k_all)
    scores = ClassDistances(ref.network, sizes, kid, kid_real, fd, fd_real, _mean(kid), _mean(kid_real), _mean(fd), _mean(fd_real))
    return scores, held


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"


def save_class_sheets(
    data: str | Path,
    out_dir: str | Path,
    *,
    classes: Sequence[int] | None = None,
    per_sheet: int = 64,
    per_row: int = 8,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write one contact sheet PNG per class, ``out_dir/<index>-<name>.png``: its first ``per_sheet`` images.

    Each file is written atomically. Returns the paths written, in class order.
    """
    from ..data.export import save_png, sheet

    ds = SynthDataset(data)
    names = list(names) if names is not None else (ds.classes or [str(k) for k in range(len(ds.info.per_class))])
    chosen = list(classes) if classes is not None else [k for k, n in enumerate(ds.info.per_class) if n > 0]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a directory; pass a directory for the contact sheets")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k in chosen:
        index = torch.nonzero(ds.labels == k).flatten()[:per_sheet].tolist()
        if not index:
            continue
        images = [ds.image(i) for i in index]
        if len({tuple(x.shape) for x in images}) > 1:  # folders may mix sizes: fit to the first
            size = images[0].shape[-1]
            images = [fit_square(x, size) for x in images]
        rows = [images[i : i + per_row] for i in range(0, len(images), per_row)]
        written.append(save_png(sheet(rows), out / f"{k:03d}-{_safe(names[k])}.png"))
    ds.close()
    return written
