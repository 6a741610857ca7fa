"""Differentially private collection: a recorder that clips each image's moments into ``ClippedSums``, and the manifest's record.

Only ``collect`` (one pass after training) offers it: there an image's features depend on that
image alone, so clipping its moments bounds its influence. In training (``TrainingCollector``)
BatchNorm's batch statistics mix the images of a batch, and a seed bundle's classes are one or a
few images, so neither is offered differential privacy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..distributed import rank_world
from ..errors import ConfigError
from ..models.taps import Tap
from ..moments import ClassMoments
from ..privacy.accountant import Accounting, noise_multiplier
from ..privacy.clipping import ClippedSums, tap_bounds
from .options import CollectOptions
from .recorder import StatsRecorder

__all__ = ["PrivacyPlan", "plan_privacy", "PrivateRecorder", "refuse_privacy"]

MECHANISM = "gaussian"


@dataclass(frozen=True)
class PrivacyPlan:
    """What a private collection promises: the budget, the accountant's noise, each tap's clipping bound."""

    accounting: Accounting
    clip: float
    bounds: dict[str, float]

    def record(self, sensitivity: float) -> dict[str, Any]:
        """``source.privacy`` of the manifest (format 1.5)."""
        a = self.accounting
        return {"mechanism": MECHANISM, "neighbours": "add-or-remove-one-image", "epsilon": a.epsilon, "delta": a.delta, "clip": self.clip,
                "clip_reference": "batchnorm-running-statistics", "noise_multiplier": a.sigma, "sensitivity": sensitivity,
                "accountant": {"name": a.accountant, "version": a.version}}


def refuse_privacy(o: CollectOptions, what: str) -> None:
    """One line for a collector that does not offer differential privacy."""
    if o.dp_epsilon is not None or o.dp_delta is not None:
        raise ConfigError(f"differential privacy is offered for a pass over a dataset (--data), not for {what}: "
                          "with one or a few images per class the noise would be all there is; leave out --dp-epsilon/--dp-delta")


def plan_privacy(o: CollectOptions, module: nn.Module, taps: Sequence[Tap]) -> PrivacyPlan | None:
    """The plan for ``o``'s budget (None without one); refuses what the guarantee cannot cover."""
    if o.dp_epsilon is None and o.dp_delta is None:
        return None
    if rank_world()[1] > 1:
        raise ConfigError("differential privacy is collected in one process (the noise is drawn once); run collect without torchrun")
    if o.fuse:
        raise ConfigError("--fuse folds the BatchNorms whose running statistics set the clipping bounds; leave out --fuse with --dp-epsilon")
    accounting = noise_multiplier(o.dp_epsilon, o.dp_delta)  # type: ignore[arg-type]
    return PrivacyPlan(accounting, o.dp_clip, tap_bounds(module, taps, o.dp_clip))


class PrivateRecorder(StatsRecorder):
    """A ``StatsRecorder`` whose per-image moments are clipped into ``ClippedSums`` instead of merged exactly."""

    def __init__(self, model: nn.Module, taps: Sequence[Tap], num_classes: int, plan: PrivacyPlan) -> None:
        super().__init__(model, taps, num_classes)
        self.plan = plan
        self.sums: ClippedSums | None = None

    def allocate(self, channels: Mapping[str, int], device: torch.device | str = "cpu") -> None:
        self.reset()
        self.sums = ClippedSums(self.plan.bounds, channels, self.num_classes, device)

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self.sums is None or self.labels is None:
            raise ConfigError("PrivateRecorder.allocate must run before the first batch")
        self.sums.add_images(self.labels)
        for name, mean, m2, positions in pending:
            self.sums.fold(name, mean, m2, int(positions), self.labels)

    def reduce(self) -> None:
        self._flush()

    def release(self) -> dict[str, ClassMoments]:
        """Noise drawn once, from a generator seeded by the operating system, and the moments made from the noisy sums."""
        assert self.sums is not None
        generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
        _, moments = self.sums.release(self.plan.accounting.sigma, generator)
        return moments
