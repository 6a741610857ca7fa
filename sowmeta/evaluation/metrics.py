"""Scores of an image set, each computed by a named network: accuracy, IS, Fréchet distance, KID, diversity.

Every score that depends on a network reports which one (``Outputs.network``). Feature-based
scores take features that one pass of a model produced (``run_model``), so a set of images is
pushed through each network once, however many scores and classes are computed from it.

Fréchet distance, KID and the Inception-Score formula come from torchmetrics, fed with those
precomputed features through its custom-feature interface; only the within-class diversity
is written here, as no library provides it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DataError, ModelError
from ..logits import logits_of
from ..models import LoadedModel
from ..data.image_sets import SynthDataset, fit_square

__all__ = [
    "Outputs",
    "network_name",
    "penultimate_layer",
    "run_model",
    "accuracy",
    "top1_accuracy",
    "inception_score",
    "inception_splits",
    "frechet_distance",
    "kernel_distance",
    "per_class_frechet",
    "per_class_kernel_distance",
    "split_per_class",
    "class_diversity",
    "inception_weights_cached",
    "default_feature_model",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def network_name(model: LoadedModel) -> str:
    """The model's name, with its weights' file name where a file gave them (``cifar-resnet20 (r20.safetensors)``).

    Short enough for a table column; no machine path.
    """
    w = model.weights
    if w is None or w.upper() == "DEFAULT" or "/" not in w and not w.endswith((".safetensors", ".pt", ".pth", ".bin")):
        return model.name if w is None or w.upper() == "DEFAULT" else f"{model.name} ({w})"
    return f"{model.name} ({Path(w).name})"


@dataclass
class Outputs:
    """One pass of a classifier over a dataset: its penultimate features, logits, and the dataset's labels."""

    network: str
    logits: torch.Tensor  # float32 [N, C]
    labels: torch.Tensor  # int64 [N]
    features: torch.Tensor | None = None  # float32 [N, D], the input of the last linear layer


def penultimate_layer(module: nn.Module) -> nn.Linear:
    """The classifier's last ``nn.Linear``; its input is the feature vector used for FD, KID and diversity."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(module).__name__} has no nn.Linear head to take features from; choose another feature model")
    return linears[-1]


@contextmanager
def _capture_input(layer: nn.Module, store: list[torch.Tensor]) -> Any:
    handle = layer.register_forward_hook(lambda _m, args, _out: store.append(args[0].detach().flatten(1)))
    try:
        yield
    finally:
        handle.remove()


def _as_dataset(data: Dataset | str | Path, model: LoadedModel) -> Dataset:
    crop, resize = model.preprocessing.crop, model.preprocessing.resize
    fit = lambda img: fit_square(img, crop, resize=resize)  # noqa: E731
    if isinstance(data, (str, Path)):
        return SynthDataset(data, transform=fit)
    if isinstance(data, SynthDataset) and data.transform is None:
        return SynthDataset(data.path, transform=fit)
    return data


@torch.no_grad()
def run_model(
    model: LoadedModel,
    data: Dataset | str | Path,
    *,
    features: bool = False,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: Progress | None = None,
) -> Outputs:
    """Push a dataset through a model once; keep logits, labels and (optionally) penultimate features.

    Args:
        model: the network and the preprocessing its inputs need.
        data: an HDF5 synthesis file, an image folder, or a dataset of (uint8 image, label);
            paths are fitted to the model's input size (see ``data.image_sets.fit_square``).
        features: also keep the input of the last linear layer (N x D).
        batch_size: images per forward pass.
        device: where the model runs (it is moved there).
        workers: DataLoader worker processes.
        progress: called with (images done, total) after each batch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, not {batch_size}")
    dataset = _as_dataset(data, model)
    module = model.module.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    feats: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    total, done = len(dataset), 0  # type: ignore[arg-type]
    hook = _capture_input(penultimate_layer(module), feats) if features else nullcontext()
    with hook:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            if x.dtype == torch.uint8:
                x = x.float().div(255)
            out = logits_of(module(model.preprocessing.normalize(x)))
            logits.append(out.float().cpu())
            labels.append(torch.as_tensor(y, dtype=torch.long))
            done += len(y)
            if progress is not None:
                progress(done, total)
    if not logits:
        raise DataError(f"{getattr(data, 'path', data)} holds no images")
    return Outputs(
        network=network_name(model),
        logits=torch.cat(logits),
        labels=torch.cat(labels),
        features=torch.cat([f.float().cpu() for f in feats]) if features else None,
    )


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose largest logit is at the label."""
    if logits.shape[0] == 0:
        raise DataError("top-1 accuracy of an empty set is undefined; pass at least one image")
    return float((logits.argmax(dim=1) == labels.to(logits.device)).double().mean())


def accuracy(model: LoadedModel, data: Dataset | str | Path, **kwargs: Any) -> float:
    """Top-1 accuracy of ``model`` on a labelled dataset (HDF5 synthesis file or image folder).

    Example:
        >>> acc = accuracy(load_model("cifar-resnet56", weights=w), "cifar10/test")  # doctest: +SKIP
    """
    out = run_model(model, data, **kwargs)
    return top1_accuracy(out.logits, out.labels)


@contextmanager
def _seeded(seed: int) -> Any:
    # torchmetrics draws subsets/permutations from the global generator; keep the caller's intact.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class _Given(nn.Module):
    """The torchmetrics "feature extractor" for features already computed: the identity, with its width."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def inception_splits(images: int, splits: int) -> int:
    """How many splits the Inception-Score formula really makes of ``images`` rows when asked for ``splits``.

    The rows are cut into chunks of ceil(images / splits) (``torch.chunk``), which can give
    fewer splits than asked: 24 images in 10 splits are 8 splits of 3.
    """
    if images < 1 or splits < 1:
        raise ConfigError(f"inception score needs at least one image and one split, got {images} images and {splits} splits")
    return math.ceil(images / math.ceil(images / splits))


def inception_score(logits: torch.Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float | None]:
    """Inception-Score formula exp(E_x KL(p(y|x) || p(y))) on a classifier's logits: (mean, std over splits).

    Computed with whatever classifier produced ``logits`` (its softmax), not necessarily
    Inception-V3; report that network with the score. The rows are shuffled (seeded by
    ``seed``) and cut into ``inception_splits(len(logits), splits)`` splits; the std is None
    for one split.
    """
    from torchmetrics.image.inception import InceptionScore

    if splits < 1 or logits.shape[0] < splits:
        raise ConfigError(f"inception score needs 1 <= splits <= images, got {splits} splits for {logits.shape[0]} images")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=_Given(logits.shape[1]), splits=splits)
    metric.update(logits.double())
    with _seeded(seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # one split has no std
        mean, std = metric.compute()
    return float(mean), (float(std) if inception_splits(logits.shape[0], splits) > 1 else None)


def _check_features(a: torch.Tensor, b: torch.Tensor, minimum: int, what: str) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise DataError(f"{what}: features must be N x D with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < minimum or b.shape[0] < minimum:
        raise DataError(f"{what} needs at least {minimum} images per set, got {a.shape[0]} and {b.shape[0]}")


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception-V3's).

    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), in float64, by torchmetrics.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_features(features_a, features_b, 2, "Fréchet distance")
    metric = FrechetInceptionDistance(feature=_Given(features_a.shape[1]))
    metric.update(features_a.double(), real=True)
    metric.update(features_b.double(), real=False)
    return float(metric.compute())


def kernel_distance(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float, int]:
    """Kernel (Inception) distance: unbiased MMD² with the cubic polynomial kernel, averaged over random subsets.

    Returns (mean, std over subsets, subset size used); the subset size shrinks to the smaller
    set when either has fewer than ``subset_size`` images.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_features(features_a, features_b, 2, "KID")
    size = min(subset_size, features_a.shape[0], features_b.shape[0])
    if size < subset_size:
        log.info("KID subset size lowered from %d to %d (the smaller set's size)", subset_size, size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=_Given(features_a.shape[1]), subsets=subsets, subset_size=size)
    metric.update(features_a.double(), real=True)
    metric.update(features_b.double(), real=False)
    with _seeded(seed):
        mean, std = metric.compute()
    return float(mean), float(std), size


def per_class_frechet(
    features_a: torch.Tensor,
    labels_a: torch.Tensor,
    features_b: torch.Tensor,
    labels_b: torch.Tensor,
    *,
    num_classes: int,
) -> list[float | None]:
    """Fréchet distance between the two sets' images of each class; None where a class has fewer than 2 images in a set."""
    out: list[float | None] = []
    for k in range(num_classes):
        a, b = features_a[labels_a == k], features_b[labels_b == k]
        out.append(frechet_distance(a, b) if min(a.shape[0], b.shape[0]) >= 2 else None)
    return out


def per_class_kernel_distance(
    features_a: torch.Tensor,
    labels_a: torch.Tensor,
    features_b: torch.Tensor,
    labels_b: torch.Tensor,
    *,
    num_classes: int,
    subsets: int = 100,
    seed: int = 0,
) -> list[float | None]:
    """KID between the two sets' images of each class (subsets of the smaller class size); None below 2 images.

    KID is unbiased in the set sizes, unlike the Fréchet distance, so it can compare a few
    images per class with a large reference.
    """
    out: list[float | None] = []
    for k in range(num_classes):
        a, b = features_a[labels_a == k], features_b[labels_b == k]
        out.append(kernel_distance(a, b, subsets=subsets, subset_size=min(a.shape[0], b.shape[0]), seed=seed + k)[0]
                   if min(a.shape[0], b.shape[0]) >= 2 else None)
    return out


def split_per_class(labels: torch.Tensor, sizes: Sequence[int], *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of ``sizes[k]`` seeded-random rows of each class k (held out), and of all the other rows.

    Classes beyond ``sizes`` hold nothing out. Both index tensors are sorted.
    """
    g = torch.Generator().manual_seed(seed)
    held: list[torch.Tensor] = []
    for k, n in enumerate(sizes):
        rows = torch.nonzero(labels == k).flatten()
        if n > rows.numel():
            raise DataError(f"cannot hold out {n} images of class {k}: it has {rows.numel()}")
        held.append(rows[torch.randperm(rows.numel(), generator=g)[:n]])
    chosen = torch.cat(held).sort().values if held else torch.zeros(0, dtype=torch.long)
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[chosen] = False
    return chosen, torch.nonzero(mask).flatten()


def class_diversity(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    max_per_class: int | None = 1000,
    seed: int = 0,
) -> list[float | None]:
    """Mean Euclidean distance between the features of two different images of the same class, per class.

    Larger is more diverse. Classes with more than ``max_per_class`` images use a seeded random
    subset (the mean over pairs is a U-statistic, so a subset estimates it without bias).
    None where a class has fewer than two images.
    """
    g = torch.Generator().manual_seed(seed)
    out: list[float | None] = []
    for k in range(num_classes):
        f = features[labels == k].double()
        n = f.shape[0]
        if n < 2:
            out.append(None)
            continue
        if max_per_class is not None and n > max_per_class:
            f = f[torch.randperm(n, generator=g)[:max_per_class]]
            n = max_per_class
        total = torch.zeros((), dtype=torch.float64)
        for start in range(0, n, 512):  # rows in blocks: an n x n distance matrix may not fit
            total += torch.cdist(f[start : start + 512], f).sum()
        out.append(float(total / (n * (n - 1))))
    return out


def inception_weights_cached() -> bool:
    """True when torchvision's Inception-V3 ImageNet weights are already in the torch hub cache (no download)."""
    from torchvision.models import Inception_V3_Weights

    name = Path(Inception_V3_Weights.IMAGENET1K_V1.url).name
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


def default_feature_model(fallback: Sequence[LoadedModel] = ()) -> LoadedModel:
    """The first of ``fallback`` (the first classifier evaluated): the same network on every machine.

    What happens to be cached never decides: Inception-V3 (``load_model("inception_v3",
    weights="IMAGENET1K_V1")``) feeds the scores only when passed as ``feature_model``. The
    report names the network used (``EvaluationReport.feature_network``).
    """
    if not fallback:
        raise ConfigError("no feature model: pass feature_model= (a LoadedModel, e.g. inception_v3) or at least one model to evaluate")
    return fallback[0]
