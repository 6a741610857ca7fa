"""``StatsRecorder``: the tap hooks and the per-tap ``ClassMoments`` every collector records into."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from ..errors import ConfigError, DataError, TapError
from ..models.taps import Tap, infer_axis
from ..moments import ClassMoments, DispatchLog, LabelGroups, central_moments, recording_taps
from ..moments.native import NativeMoments

__all__ = ["StatsRecorder"]


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
        self.dispatch = DispatchLog("collect")  # which implementation computes each tap's moments, said once

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
        """The tap's channel axis; an undecided one is decided from the first feature seen (``models.taps.infer_axis``)."""
        if tap.axis is not None:
            return tap.axis
        axis = infer_axis(self.model.get_submodule(tap.module), x.shape)
        self.taps = [replace(t, axis=axis) if t.name == tap.name else t for t in self.taps]
        return axis

    def _record(self, tap: Tap, x: torch.Tensor, native: NativeMoments | None) -> None:
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
            img = central_moments(feat, axis, native_moments=native, log=self.dispatch, tap=tap.name)
            self._pending.append((tap.name, img.mean, img.m2, img.positions))

    def _flush(self) -> None:
        """Fold the per-image moments of the batch in progress into the per-class moments."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self.dispatch.say()
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

        BatchNorm-input taps on the CPU record through the fused kernel (``moments.native``), which
        reads each map once for the BatchNorm and its moments; the others through hooks.
        """
        with recording_taps(self.model, self.taps, self._record, contract="central"):
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
