"""Stage 2, *plan*: which image has which class, how images form batches, each batch's seed and initial images.

Every batch's randomness derives from the run's seed and the batch's index, so a batch's
result does not depend on which process runs it or whether the run was resumed. The run key
identifies the settings a partial output must share to be resumed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.folders import read_image, seed_files
from ..errors import ConfigError
from ..models import fingerprint
from ..bundle.manifest import Manifest
from .config import SynthConfig
from .job import SynthJob

__all__ = ["Plan", "RunPlan", "plan_batches", "plan_run"]


@dataclass(frozen=True)
class Plan:
    """Which class every image has, and how images are cut into batches ([start, stop) ranges)."""

    labels: tuple[int, ...]
    batches: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.labels)


def _even_cuts(start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) cut into the fewest batches of at most ``batch_size``, sizes differing by at most one."""
    n = stop - start
    count = -(-n // batch_size)
    edges = [start + (n * i) // count for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def plan_batches(classes: list[int], per_class: int, batch_size: int, *, mixed: bool) -> Plan:
    """Single-class batches (each class's images cut into batches), or mixed ones (classes interleaved).

    Batches are cut evenly (200 images at batch size 64: four of 50, not 64, 64, 64, 8), because
    the objective's image priors weigh a batch as a whole and a small remainder batch would differ.
    """
    if per_class < 1:
        raise ConfigError(f"images per class must be at least 1, not {per_class}")
    if not classes:
        raise ConfigError("no classes to synthesize; pass at least one class")
    labels: list[int] = []
    batches: list[tuple[int, int]] = []
    if mixed:
        labels = [c for _ in range(per_class) for c in classes]
        batches = _even_cuts(0, len(labels), batch_size)
    else:
        for c in classes:
            start = len(labels)
            labels += [c] * per_class
            batches += _even_cuts(start, len(labels), batch_size)
    return Plan(tuple(labels), tuple(batches))


@dataclass
class RunPlan:
    """The plan of a run, with what makes every batch reproducible."""

    plan: Plan
    size: int
    seed: int
    mean: torch.Tensor  # 1 x 3 x 1 x 1, the preprocessing's
    std: torch.Tensor
    init_noise: float
    run_key: str
    init_of: Callable[[int, int], torch.Tensor] | None = None  # images [a, b) in [0, 1], when init from images

    def batch_seed(self, b: int) -> int:
        return self.seed * 1_000_003 + b

    def initial_images(self, b: int) -> torch.Tensor:
        """Batch ``b``'s starting images in [0, 1]-scale: noise with the data's mean and std, or the given images plus noise."""
        a, z = self.plan.batches[b]
        gen = torch.Generator().manual_seed(self.batch_seed(b))
        if self.init_of is None:
            return self.mean + self.std * torch.randn(z - a, 3, self.size, self.size, generator=gen)
        return self.init_of(a, z) + self.init_noise * torch.randn(z - a, 3, self.size, self.size, generator=gen)


def plan_run(job: SynthJob, per_class: int, init_images: str | Path | None = None) -> RunPlan:
    """Batches, seeds and initial images for ``job``, and the key a resumed run must match."""
    config = job.config
    size = job.preprocessing.crop
    plan = plan_batches(job.classes, per_class, config.batch_size, mixed=config.mixed_batches)
    init_of, digest = _init_images(init_images, job.labels, plan, size) if config.init == "images" else (None, None)
    key = _run_key(config, plan, fingerprint(job.model.module), job.manifest, size, digest, [(t.name, t.weight) for t in job.terms])
    mean = torch.tensor(job.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(job.preprocessing.std).view(1, 3, 1, 1)
    return RunPlan(plan, size, config.seed, mean, std, config.init_noise, key, init_of)


def _init_images(
    source: str | Path, labels: Sequence[str], plan: Plan, size: int
) -> tuple[Callable[[int, int], torch.Tensor], str]:
    """Initial images for plan positions [a, b): the class's seed images in turn, fitted to ``size``.

    Also returns a digest of the fitted images, so that a resumed run refuses changed seeds.
    """
    from torchvision.transforms.functional import pil_to_tensor

    from ..data.image_sets import fit_square

    per_class: dict[int, list[torch.Tensor]] = {}
    digest = hashlib.sha256()
    for path, k in seed_files(source, labels):
        img = fit_square(pil_to_tensor(read_image(path)), size)
        digest.update(f"{k}:{tuple(img.shape)}:".encode() + img.contiguous().numpy().tobytes())
        per_class.setdefault(k, []).append(img.float() / 255)
    missing = sorted(set(plan.labels) - set(per_class))
    if missing:
        raise ConfigError(f"{source} has no initial image for class {labels[missing[0]]!r}; add one or use --init noise")
    position: list[int] = []
    seen: dict[int, int] = {}
    for k in plan.labels:
        position.append(seen.get(k, 0))
        seen[k] = position[-1] + 1

    def get(a: int, b: int) -> torch.Tensor:
        return torch.stack([per_class[plan.labels[i]][position[i] % len(per_class[plan.labels[i]])] for i in range(a, b)])

    return get, digest.hexdigest()


def _run_key(
    config: SynthConfig, plan: Plan, model_fp: str, manifest: Manifest | None, size: int, init: str | None, terms: list[tuple[str, float]]
) -> str:
    """What a partial file must match to be resumed; ``init`` is the initial images' digest, ``terms`` the user's terms."""
    data = {
        "config": config.fingerprint(),
        "labels": list(plan.labels),
        "batches": [list(b) for b in plan.batches],
        "model": model_fp,
        "bundle": [f.sha256 for f in manifest.files] if manifest else None,
        "size": size,
        "init": init,
    }
    if terms:  # a run without terms of the user's keeps the key it always had
        data["terms"] = terms
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


