"""``DistillConfig``: the hyper-parameters of a distillation run (importable without torch, for the CLI's help)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ConfigError
from ..options import documented, option

__all__ = ["DistillConfig", "MAX_LR"]


MAX_LR = 10.0  # beyond it SGD only diverges: the student's weights become inf/NaN in the first steps


@documented
@dataclass(frozen=True)
class DistillConfig:
    """Hyper-parameters of a distillation run; the defaults are the usual CIFAR recipe. Every field is also an
    option of ``sowmeta distill``."""

    epochs: int = field(default=200, metadata=option("Passes over the images; the cosine schedule decays the learning rate to 0 over them.", low=1))
    batch_size: int = field(default=128, metadata=option("Images per SGD step.", low=1))
    lr: float = field(default=0.1, metadata=option("Initial SGD learning rate (cosine decay to 0)."))
    momentum: float = field(default=0.9, metadata=option("SGD momentum."))
    weight_decay: float = field(default=5e-4, metadata=option("L2 penalty on every parameter."))
    temperature: float = field(default=5.0, metadata=option("Softmax temperature T of both networks' outputs; the loss is scaled by T²."))
    flip: bool = field(default=True, metadata=option("Random horizontal flips."))
    pad: int = field(default=4, metadata=option("Random crops after zero-padding each side by this many pixels (0: none).", low=0))
    amp: str = field(default="none", metadata=option(
        "Autocast on CUDA (ignored on the CPU): none, bf16 or fp16; the same default as synthesize.", choices=("none", "bf16", "fp16")))
    seed: int = field(default=0, metadata=option("Student initialization, data order and augmentation."))

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
