"""Stage 4, *sink*: where finished batches go. A new output format is a new ``Sink``.

``MemorySink`` keeps the images in memory (single process); ``HDF5Sink`` writes the
resumable HDF5 file (``writer.SynthWriter``), one partial file per rank under torchrun,
merged by rank 0 when every batch is done.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from .engine import BatchResult
from .job import SynthJob
from .plan import RunPlan
from .results import SynthResult
from .writer import SynthWriter, merge_shards, partial_path

__all__ = ["Sink", "MemorySink", "HDF5Sink"]

log = logging.getLogger(__name__)


@runtime_checkable
class Sink(Protocol):
    """Receives a run's batches in the plan's terms (batch index = position in ``plan.plan.batches``)."""

    def open(self, job: SynthJob, plan: RunPlan) -> set[int]:
        """Prepare to receive ``plan``'s batches; return the indices already done (for resuming)."""

    def write(self, index: int, result: BatchResult) -> None:
        """Keep batch ``index``; once this returns, the batch counts as done."""

    def close(self) -> None:
        """Release resources; always called, also when the run fails or is interrupted."""

    def finish(self, job: SynthJob, plan: RunPlan, seconds: float, resumed: int) -> SynthResult:
        """After every batch of every process: the run's result."""


class MemorySink:
    """Keeps every batch's images and verdicts in memory; ``SynthResult.uint8`` holds the images."""

    def __init__(self) -> None:
        self.batches: dict[int, BatchResult] = {}

    def open(self, job: SynthJob, plan: RunPlan) -> set[int]:
        return set()

    def write(self, index: int, result: BatchResult) -> None:
        self.batches[index] = result

    def close(self) -> None:
        pass

    def finish(self, job: SynthJob, plan: RunPlan, seconds: float, resumed: int) -> SynthResult:
        order = sorted(self.batches)
        uint8 = torch.cat([self.batches[b].images for b in order]).mul(255).round().to(torch.uint8)
        prediction = torch.cat([self.batches[b].prediction for b in order])
        confidence = torch.cat([self.batches[b].confidence for b in order])
        return SynthResult(None, torch.tensor(plan.plan.labels), prediction, confidence, list(job.labels), job.config, seconds, 0, uint8)


class HDF5Sink:
    """The HDF5 synthesis file ``out`` (docs/synthesis.md), resumable batch by batch."""

    def __init__(self, out: str | Path, *, overwrite: bool = False, rank: int = 0, world: int = 1) -> None:
        self.out = Path(out)
        self.overwrite = overwrite
        self.rank, self.world = rank, world
        self.writer: SynthWriter | None = None

    def open(self, job: SynthJob, plan: RunPlan) -> set[int]:
        config = job.config
        attrs = {
            "config": config.to_dict(),
            "labels": list(job.labels),
            "classes": job.classes,
            "per_class": len(plan.plan) // len(job.classes),
            "mode": config.mode,
            **job.source,
            "bundle_scenario": job.manifest.source.scenario if job.manifest else "",
            "model": job.model.name,
            "weights": str(job.model.weights),
        }
        snaps = (config.iterations - 1) // config.save_every if config.save_every else 0
        self.writer = SynthWriter(
            partial_path(self.out, self.rank, self.world), plan.plan, (plan.size, plan.size), run_key=plan.run_key,
            attrs=attrs, snapshots=snaps, overwrite=self.overwrite,
        )
        return self.writer.done()

    def write(self, index: int, result: BatchResult) -> None:
        assert self.writer is not None
        self.writer.write_batch(
            index,
            result.images.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
            result.confidence.numpy(),
            result.loss.numpy(),
            result.prediction.numpy(),
            [(it, s.permute(0, 2, 3, 1).numpy()) for it, s in result.snapshots],
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def interrupted(self) -> str:
        """The line to log when the run stops early."""
        w = self.writer
        return f"{w.done_count} of {len(w.plan.batches)} batches are saved in {w.path}; run the same command to resume" if w else ""

    def finish(self, job: SynthJob, plan: RunPlan, seconds: float, resumed: int) -> SynthResult:
        import h5py
        import numpy as np

        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        if self.rank == 0:
            merge_shards([partial_path(self.out, r, self.world) for r in range(self.world)], self.out, overwrite=self.overwrite)
        if self.world > 1:
            dist.barrier()
        with h5py.File(self.out, "r") as f:
            return SynthResult(
                self.out,
                torch.from_numpy(np.asarray(f["labels"][:])),
                torch.from_numpy(np.asarray(f["prediction"][:])),
                torch.from_numpy(np.asarray(f["confidence"][:])),
                list(job.labels),
                job.config,
                seconds,
                resumed,
            )
