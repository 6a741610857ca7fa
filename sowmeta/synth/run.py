"""Stage 3, *run*: the ``Inverter`` over this process's batches, each handed to the sink as it finishes."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .engine import IterationInfo, Inverter, TapTarget
from .job import SynthJob
from .plan import RunPlan
from .results import SynthProgress
from .sinks import Sink

__all__ = ["run_batches"]

log = logging.getLogger(__name__)


def run_batches(
    job: SynthJob,
    plan: RunPlan,
    sink: Sink,
    *,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    progress: Callable[[SynthProgress], None] | None = None,
) -> int:
    """Optimize batches ``rank, rank + world, ...`` that the sink does not hold yet; returns how many it held (resumed)."""
    module = job.model.module.to(device)
    targets = [TapTarget(t.tap, t.mean.to(device), t.var.to(device), t.weight, None if t.image_var is None else t.image_var.to(device)) for t in job.targets]
    inverter = Inverter(module, targets, job.preprocessing, job.config, device, terms=job.terms)
    batches = plan.plan.batches
    mine = [b for b in range(len(batches)) if b % world == rank]
    done = sink.open(job, plan)
    resumed = len([b for b in mine if b in done])
    todo = [b for b in mine if b not in done]
    images_total = sum(batches[b][1] - batches[b][0] for b in mine)
    images_done = sum(batches[b][1] - batches[b][0] for b in mine if b in done)
    try:
        for i, b in enumerate(todo):
            a, z = batches[b]
            labels = plan.plan.labels[a:z]

            def report(info: IterationInfo | None, _i: int = i) -> None:
                if progress is not None:
                    progress(SynthProgress(resumed + _i + 1, len(mine), images_done, images_total, info, resumed))

            result = inverter.run(
                torch.tensor(labels), torch.tensor([job.row_of(c) for c in labels]), plan.initial_images(b),
                seed=plan.batch_seed(b), progress=report if progress else None,
            )
            images_done += z - a
            sink.write(b, result)
            report(None)
    except KeyboardInterrupt:
        line = getattr(sink, "interrupted", lambda: "")()
        if line:
            log.warning("interrupted: %s", line)
        raise
    finally:
        sink.close()
    return resumed
