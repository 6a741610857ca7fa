"""``CollectOptions``: the settings of a collection, shared by ``collect`` and ``collect_seeds`` (and ``sowmeta collect``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..options import documented, option

__all__ = ["CollectOptions", "DEFAULT_SHARD_BYTES"]

DEFAULT_SHARD_BYTES = 1 << 30  # Bundle.save's default (sowmeta.bundle.bundle), repeated to keep this module free of torch


@documented
@dataclass(frozen=True)
class CollectOptions:
    """How statistics are collected and where they are written. Each field is also a keyword of ``collect`` and
    ``collect_seeds`` and an option of ``sowmeta collect``; a field marked (folders) or (seeds) applies to that source only."""

    taps: str | Sequence[str] = field(default="auto", metadata=option(
        "A tap preset (auto, bn-inputs, conv-outputs, ...) or module names/globs with :in/:out (a list, or comma-separated)."))
    prefix_tokens: int = field(default=0, metadata=option(
        "Leading positions of token-sequence taps left out of the statistics (a ViT's class token: 1).", low=0))
    fuse: bool = field(default=False, metadata=option("Fold BatchNorm into the convolutions first (an inference-optimized model)."))
    batch_size: int | None = field(default=None, metadata=option(
        "Images per forward pass; unset: sized for the input and device (sowmeta.data.plan_loader, e.g. 256 for 32 px on a CPU).", low=1))
    workers: int | None = field(default=None, metadata=option(
        "(folders) Processes decoding images (0: in this process); unset: chosen for the cores there are, none on 2 cores.", low=0))
    device: str = field(default="cpu", metadata=option("Where the model runs: cpu, cuda, cuda:1, ...", by_hand=True))
    limit_per_class: int | None = field(default=None, metadata=option("(folders) Use only the first N images (by file name) of each class.", low=1))
    strict: bool = field(default=False, metadata=option("(folders) Fail on the first undecodable image instead of skipping and counting it."))
    labels_by_position: bool = field(default=False, metadata=option(
        "(folders) Map class folders to classes by sorted order even when their names are not the model's labels."))
    keep_rejected: bool = field(default=False, metadata=option("(seeds) Keep the seeds the model misclassifies."))
    dataset: str | None = field(default=None, metadata=option(
        "The data's name for the manifest and the model card (default: the data folder's name, never a machine's path)."))
    out: Path | None = field(default=None, metadata=option("Also save the bundle there; checked before the pass (never inside the data).", by_hand=True))
    overwrite: bool = field(default=False, metadata=option("Replace an existing bundle at the output (only a sowmeta bundle is ever replaced)."))
    dtype: str = field(default="float32", metadata=option("Stored precision of the statistics.", choices=("float32", "float16")))
    shard_bytes: int = field(default=DEFAULT_SHARD_BYTES, metadata=option("Bytes per safetensors file.", flag="--shard-size", low=1))
    dp_epsilon: float | None = field(default=None, metadata=option(
        "(folders) Release the statistics with (epsilon, delta)-differential privacy (with --dp-delta): each image's moments "
        "clipped, Gaussian noise added once to every class's sums and counts (docs/privacy.md).", low=0, metavar="EPSILON"))
    dp_delta: float | None = field(default=None, metadata=option(
        "(folders) The delta of the privacy guarantee, below 1/images (e.g. 1e-5).", low=0, high=1, high_open=True, metavar="DELTA"))
    dp_clip: float = field(default=1.5, metadata=option(
        "With --dp-epsilon: each image's feature energy at a tap is clipped to this many times the tap's typical energy "
        "(from the BatchNorm's running statistics).", low=0, metavar="C"))

    @classmethod
    def of(cls, options: CollectOptions | None, overrides: dict[str, Any], *, what: str) -> CollectOptions:
        """``options`` (or the defaults) with the keyword ``overrides`` of the call ``what``; an unknown keyword is a TypeError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"{what}() got an unexpected keyword argument {unknown[0]!r}")
        return dataclasses.replace(options or cls(), **overrides)
