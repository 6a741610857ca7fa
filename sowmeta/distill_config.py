"""``DistillConfig``: the hyper-parameters of a distillation run (importable without torch, for the CLI's help)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

__all__ = ["DistillConfig"]


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
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, not {self.lr}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, not {self.temperature}")
        if self.momentum < 0 or self.weight_decay < 0 or self.pad < 0:
            raise ConfigError("momentum, weight_decay and pad must not be negative")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp must be none, bf16 or fp16, not {self.amp!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
