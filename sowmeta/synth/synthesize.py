"""``synthesize``: a model plus its bundle in, a dataset of images of chosen classes out.

Resolves the bundle (path or registry name) and the model (default: the one the manifest
names), checks that they match, builds the targets for the mode, then optimizes the plan's
batches one by one, writing each to the HDF5 file as it finishes. Under torchrun, rank r
takes batches r, r + world, ... and rank 0 merges the shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..bundle import Bundle, Manifest
from ..collect import seed_files
from ..data import read_image
from ..distributed import process_group
from ..errors import ConfigError, SynthesisError, TapError
from ..outputs import check_output
from ..models import LoadedModel, fingerprint, load_model_for
from ..preprocess import Preprocessing
from ..registry import PullResult, locate_bundle
from ..taps import resolve_taps
from .config import SynthConfig
from .engine import BatchResult, Inverter, IterationInfo, TapTarget, tap_weights
from .writer import Plan, SynthWriter, merge_shards, partial_path, plan_batches

__all__ = ["synthesize", "SynthResult", "SynthProgress", "resolve_classes", "build_targets"]

log = logging.getLogger(__name__)


@dataclass
class SynthProgress:
    """Where a run stands: batch ``batch`` of ``batches`` (this rank's), and its current iteration."""

    batch: int
    batches: int
    images_done: int
    images_total: int
    iteration: IterationInfo | None = None
    resumed: int = 0


@dataclass
class SynthResult:
    """What a run produced: the file (or, without ``out``, the images in memory) and the teacher's verdict."""

    path: Path | None
    labels: torch.Tensor
    prediction: torch.Tensor
    confidence: torch.Tensor
    class_labels: list[str]
    config: SynthConfig
    seconds: float
    resumed_batches: int = 0
    uint8: torch.Tensor | None = field(default=None, repr=False)  # N x 3 x H x W when held in memory

    @property
    def teacher_accuracy(self) -> float:
        """Fraction of images the teacher classifies as their target class."""
        return float((self.prediction == self.labels).double().mean())

    @property
    def chance(self) -> float:
        """Top-1 a guess would reach: one over the number of classes."""
        return 1.0 / max(1, len(self.class_labels))

    @property
    def failed(self) -> bool:
        """True when the teacher recognises the images no better than chance: the run did not work."""
        return self.teacher_accuracy <= self.chance and len(self.class_labels) > 1

    def images(self) -> torch.Tensor:
        """All images as float in [0, 1], N x 3 x H x W (read from the file when written to one)."""
        if self.uint8 is None:
            import h5py

            with h5py.File(self.path, "r") as f:
                self.uint8 = torch.from_numpy(np.asarray(f["images"][:])).permute(0, 3, 1, 2).contiguous()
        return self.uint8.float() / 255


def resolve_classes(classes: Sequence[int | str] | None, labels: Sequence[str], num_classes: int) -> list[int]:
    """Class indices from indices, label names or ``None`` (all)."""
    if classes is None:
        return list(range(num_classes))
    names = {n: i for i, n in enumerate(labels)}
    out: list[int] = []
    for c in classes:
        if isinstance(c, str) and c in names:
            out.append(names[c])
        elif isinstance(c, int) or (isinstance(c, str) and c.strip().lstrip("-").isdigit()):
            k = int(c)
            if not 0 <= k < num_classes:
                raise ConfigError(f"class {k} does not exist (the model has classes 0..{num_classes - 1})")
            out.append(k)
        else:
            raise ConfigError(f"class {c!r} is neither a class index nor a label of the model (e.g. {labels[0]!r})")
    if len(set(out)) != len(out):
        raise ConfigError("a class is listed twice; list every class once")
    return out


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
            targets.append(TapTarget(t, s.mean, s.var, w))
        else:
            targets.append(TapTarget(t, s.global_mean[None], s.global_var[None], w))
    if mode == "cc":
        row = {c: i for i, c in enumerate(bundle.classes)}
        return targets, lambda c: row[c]
    return targets, lambda c: 0


def _init_images(
    source: str | Path, labels: Sequence[str], plan: Plan, size: int
) -> tuple[Callable[[int, int], torch.Tensor], str]:
    """Initial images for plan positions [a, b): the class's seed images in turn, fitted to ``size``.

    Also returns a digest of the fitted images, so that a resumed run refuses changed seeds.
    """
    from torchvision.transforms.functional import pil_to_tensor

    from ..synthdata import fit_square

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


def _run_key(config: SynthConfig, plan: Plan, model_fp: str, manifest: Manifest | None, size: int, init: str | None) -> str:
    """What a partial file must match to be resumed; ``init`` is the initial images' digest."""
    data = {
        "config": config.fingerprint(),
        "labels": list(plan.labels),
        "batches": [list(b) for b in plan.batches],
        "model": model_fp,
        "bundle": [f.sha256 for f in manifest.files] if manifest else None,
        "size": size,
        "init": init,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _device_for(device: str | torch.device, world: int) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and world > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


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
    progress: Callable[[SynthProgress], None] | None = None,
) -> SynthResult:
    """Synthesize ``per_class`` images of every class in ``classes``.

    Args:
        bundle: a ``Bundle``, a bundle directory, a registry name ``org/name[@revision]``
            (pulled on demand) or what ``registry.locate_bundle`` returned; may be None in mode
            ``di``, which needs only the model. The file records its name, revision and commit.
        model: the classifier; default the one the bundle's manifest names (architecture and
            weights). It must be the model the bundle was recorded on (checked).
        classes: class indices or labels; default all classes.
        per_class: images per class.
        config: the objective and schedule (default ``SynthConfig()``, the paper's ImageNet setting).
        out: the HDF5 file to write; None keeps the images in memory (single process only).
            An unfinished ``out`` (``out.partial``) with the same settings is resumed.
        device: where to optimize (``cuda`` picks the local rank's GPU under torchrun).
        overwrite: replace ``out`` and discard any unfinished run of it.
        init_images: a folder ``<label or index>/<image>`` of initial images (seeds or sketches)
            for ``config.init == "images"``.
        registry: the registry to pull a bundle name from (see ``sowmeta.registry``).
        progress: called after every reported iteration and every batch.

    Example:
        >>> result = synthesize("org/cifar-resnet56-cc", per_class=50, config=SynthConfig.cifar(), out="synth.h5")  # doctest: +SKIP
    """
    started = time.perf_counter()
    config = config or SynthConfig()
    out_path = Path(out) if out is not None else None
    if config.init == "images" and init_images is None:
        raise ConfigError("init 'images' needs a folder of initial images (--init DIR)")
    manifest: Manifest | None = None
    source: dict[str, str] = {"bundle": "", "bundle_revision": "", "bundle_commit": ""}
    path: Path | None = None
    if bundle is not None and not isinstance(bundle, Bundle):
        located = bundle if isinstance(bundle, PullResult) else locate_bundle(bundle, registry=registry)
        source = {"bundle": located.name, "bundle_revision": located.revision, "bundle_commit": located.commit}
        path = located.path
        manifest = Bundle.read_manifest(path)
    elif isinstance(bundle, Bundle):
        manifest, source["bundle"], path = bundle.manifest, str(bundle.path or "<in memory>"), bundle.path
    if out_path is not None:
        check_output(out_path, "synth", overwrite=overwrite, inputs=[("the bundle", path), ("--init", init_images)])
    if manifest is None and model is None:
        raise ConfigError("without a bundle, pass the model (--model) to synthesize from")
    if config.mode != "di" and manifest is None:
        raise ConfigError(f"mode {config.mode} needs a bundle; pass --bundle (or use --mode di)")
    num_classes = manifest.model.num_classes if manifest else model.num_classes  # type: ignore[union-attr]
    labels = (manifest.model.labels if manifest else model.labels) or [str(i) for i in range(num_classes)]  # type: ignore[union-attr]
    wanted = resolve_classes(classes, labels, num_classes)
    if manifest is not None and config.mode != "di":
        # the bundle is read and verified before any model is built from what its manifest names
        if not isinstance(bundle, Bundle) or any(c not in bundle.classes for c in wanted):
            bundle = Bundle.load(path, classes=wanted)  # type: ignore[arg-type]
        if config.mode == "cc":
            bundle.require_statistics(wanted)
    if model is None:
        model = load_model_for(manifest)  # type: ignore[arg-type]
    module = model.module
    preprocessing: Preprocessing = manifest.preprocessing if manifest else model.preprocessing
    size = preprocessing.crop
    plan = plan_batches(wanted, per_class, config.batch_size, mixed=config.mixed_batches)

    with process_group(device) as (rank, world):
        if world > 1 and out_path is None:
            raise ConfigError("under torchrun, pass an output file (--out)")
        dev = _device_for(device, world)
        module.to(dev)
        if isinstance(bundle, Bundle) and config.mode != "di":
            bundle.check(module, check_weights=config.check_fingerprint, device=dev)
        targets, row_of = build_targets(config.mode, module, bundle if isinstance(bundle, Bundle) else None, wanted, config)
        targets = [TapTarget(t.tap, t.mean.to(dev), t.var.to(dev), t.weight) for t in targets]
        inverter = Inverter(module, targets, preprocessing, config, dev)
        init_of, init_digest = _init_images(init_images, labels, plan, size) if config.init == "images" else (None, None)
        mine = [b for b in range(len(plan.batches)) if b % world == rank]
        snaps = (config.iterations - 1) // config.save_every if config.save_every else 0
        writer = None
        done: set[int] = set()
        if out_path is not None:
            attrs = {
                "config": config.to_dict(),
                "labels": list(labels),
                "classes": wanted,
                "per_class": per_class,
                "mode": config.mode,
                **source,
                "bundle_scenario": manifest.source.scenario if manifest else "",
                "model": model.name,
                "weights": str(model.weights),
            }
            key = _run_key(config, plan, fingerprint(module), manifest, size, init_digest)
            writer = SynthWriter(
                partial_path(out_path, rank, world), plan, (size, size), run_key=key, attrs=attrs, snapshots=snaps, overwrite=overwrite
            )
            done = writer.done()
        resumed = len([b for b in mine if b in done])
        todo = [b for b in mine if b not in done]
        memory: dict[int, BatchResult] = {}
        images_total = sum(plan.batches[b][1] - plan.batches[b][0] for b in mine)
        images_done = sum(plan.batches[b][1] - plan.batches[b][0] for b in mine if b in done)
        try:
            for i, b in enumerate(todo):
                a, z = plan.batches[b]
                y = torch.tensor(plan.labels[a:z])
                rows = torch.tensor([row_of(c) for c in plan.labels[a:z]])
                batch_seed = config.seed * 1_000_003 + b
                if init_of is None:
                    gen = torch.Generator().manual_seed(batch_seed)
                    mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
                    std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
                    init = mean + std * torch.randn(z - a, 3, size, size, generator=gen)
                else:
                    gen = torch.Generator().manual_seed(batch_seed)
                    init = init_of(a, z) + config.init_noise * torch.randn(z - a, 3, size, size, generator=gen)

                def report(info: IterationInfo, _i: int = i) -> None:
                    if progress is not None:
                        progress(SynthProgress(resumed + _i + 1, len(mine), images_done, images_total, info, resumed))

                result = inverter.run(y, rows, init, seed=batch_seed, progress=report if progress else None)
                images_done += z - a
                if writer is not None:
                    writer.write_batch(
                        b,
                        result.images.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
                        result.confidence.numpy(),
                        result.loss.numpy(),
                        result.prediction.numpy(),
                        [(it, s.permute(0, 2, 3, 1).numpy()) for it, s in result.snapshots],
                    )
                else:
                    memory[b] = result
                if progress is not None:
                    progress(SynthProgress(resumed + i + 1, len(mine), images_done, images_total, None, resumed))
        except KeyboardInterrupt:
            if writer is not None:
                log.warning("interrupted: %d of %d batches are saved in %s; run the same command to resume", writer.done_count, len(plan.batches), writer.path)
            raise
        finally:
            if writer is not None:
                writer.close()
        if out_path is None:
            order = sorted(memory)
            uint8 = torch.cat([memory[b].images for b in order]).mul(255).round().to(torch.uint8)
            return SynthResult(
                None,
                torch.tensor(plan.labels),
                torch.cat([memory[b].prediction for b in order]),
                torch.cat([memory[b].confidence for b in order]),
                list(labels),
                config,
                time.perf_counter() - started,
                0,
                uint8,
            )
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        if rank == 0:
            merge_shards([partial_path(out_path, r, world) for r in range(world)], out_path, overwrite=overwrite)
        if world > 1:
            dist.barrier()
    import h5py

    with h5py.File(out_path, "r") as f:
        return SynthResult(
            out_path,
            torch.from_numpy(f["labels"][:]),
            torch.from_numpy(f["prediction"][:]),
            torch.from_numpy(f["confidence"][:]),
            list(labels),
            config,
            time.perf_counter() - started,
            resumed,
        )
