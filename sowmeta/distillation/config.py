"""``DistillConfig``: the hyper-parameters of a distillation run (importable without torch, for the CLI's help)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ConfigError

__all__ = ["DistillConfig", "MAX_LR"]


MAX_LR = 10.0  # beyond it SGD only diverges: the student's weights become inf/NaN in the first steps


@dataclass(frozen=True)
class DistillConfig:
    """Hyper-parameters of a distillation run; the defaults are the usual CIFAR recipe.

    Args:
        epochs: passes over the images; the cosine schedule decays the learning rate to 0 over them.
        batch_size: images per SGD step.
        lr: initial SGD learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty on every parameter.
        temperature: softmax temperature T of both networks' outputs; the loss is scaled by T².
        flip: random horizontal flips.
        pad: random crops after zero-padding each side by this many pixels (0: none).
        amp: ``"bf16"``, ``"fp16"`` or ``"none"``: autocast on CUDA (ignored on CPU).
        seed: student initialization, data order, augmentation.
    """

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 5.0
    flip: bool = True
    pad: int = 4
    amp: str = "bf16"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, not {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {self.batch_size}")
        if not 0 < self.lr <= MAX_LR:  # also refuses NaN, whose comparisons are all false
            raise ConfigError(f"learning rate must be a number in (0, {MAX_LR:g}], not {self.lr}; SGD for distillation uses about 0.1")
        if not 0 < self.temperature < math.inf:
            raise ConfigError(f"temperature must be a positive number, not {self.temperature}")
        if not (0 <= self.momentum < math.inf and 0 <= self.weight_decay < math.inf) or self.pad < 0:
            raise ConfigError("momentum and weight_decay must be finite numbers >= 0, and pad >= 0")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp must be none, bf16 or fp16, not {self.amp!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
