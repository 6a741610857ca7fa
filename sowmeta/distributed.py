"""torch.distributed set-up from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["launched_by_torchrun", "launch_rank", "is_main_process", "process_group", "rank_world", "device_for_rank"]

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    """True when torchrun (or an equivalent launcher) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_rank() -> int:
    """This process's rank as the launcher set it (``RANK``), 0 when not launched by torchrun."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """True for the process that reports and writes shared outputs (rank 0, or the only process)."""
    return launch_rank() == 0


def device_for_rank(device: str | torch.device, world: int) -> torch.device:
    """``device`` (checked: ``devices.check_device``); under torchrun a bare ``cuda`` means this rank's GPU (``LOCAL_RANK``)."""
    from .devices import check_device

    dev = check_device(device)
    if dev.type == "cuda" and dev.index is None and world > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator[tuple[int, int]]:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA) for the block; no-op alone."""
    import torch.distributed as dist

    if not launched_by_torchrun() or dist.is_initialized():
        yield rank_world()
        return
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    try:
        yield rank_world()
        # Leave together: a rank done early (rank 1 while rank 0 writes the bundle) that tears its
        # gloo group down under a live peer could abort at exit. A rank that raised skips this, and
        # its peers' barrier then fails: that rank's error is the one to report, so theirs is only logged.
        try:
            dist.barrier()
        except RuntimeError as exc:
            log.debug("rank %d: a peer left the process group early (%s)", dist.get_rank(), exc)
    finally:
        dist.destroy_process_group()
