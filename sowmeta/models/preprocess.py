"""Input preprocessing: recorded in every bundle so that synthesis and evaluation match collection."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["Preprocessing", "IMAGENET_MEAN", "IMAGENET_STD"]


def _triple(value: str | tuple[float, float, float] | None, default: tuple[float, float, float], what: str) -> tuple[float, float, float]:
    if value is None:
        return default
    try:
        vals = tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"--{what} takes three comma-separated numbers (e.g. 0.485,0.456,0.406), got {value!r}")
    return vals  # type: ignore[return-value]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side to ``resize`` (if set), center-crop to ``crop``, scale to [0, 1], normalize.

    ``crop`` is also the resolution images are synthesized at.
    """

    crop: int
    resize: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    source: str = field(default="options", compare=False)

    def with_options(
        self,
        *,
        crop: int | None = None,
        resize: int | None = None,
        mean: str | tuple[float, float, float] | None = None,
        std: str | tuple[float, float, float] | None = None,
    ) -> Preprocessing:
        """This preprocessing with some values replaced (the CLI's ``--crop/--resize/--mean/--std``).

        A new ``crop`` without a ``resize`` keeps the weights' resize/crop ratio (256/224), so a
        smaller input is never a small centre of a large resize. ``mean``/``std`` may be given as
        text, ``"0.485,0.456,0.406"``.
        """
        if all(v is None for v in (crop, resize, mean, std)):
            return self
        new_std = _triple(std, self.std, "std")
        if min(new_std) <= 0:
            raise ConfigError(f"--std values must be positive, got {std!r}")
        if resize is None and crop is not None and self.resize is not None:
            resize = max(crop, round(crop * self.resize / self.crop))
        return Preprocessing(
            crop=crop or self.crop,
            resize=resize if resize is not None else self.resize,
            mean=_triple(mean, self.mean, "mean"),
            std=new_std,
            interpolation=self.interpolation,
            source="options",
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            crop=int(d["crop"]),
            resize=None if d.get("resize") is None else int(d["resize"]),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            interpolation=str(d.get("interpolation", "bilinear")),
            source=str(d.get("source", "options")),
        )

    def transform(self) -> Any:
        """A torchvision transform from a PIL image to a normalized float tensor [3, crop, crop]."""
        from torchvision import transforms as T

        interp = T.InterpolationMode(self.interpolation)
        steps: list[Any] = []
        if self.resize is not None:
            steps.append(T.Resize(self.resize, interpolation=interp, antialias=True))
        steps += [T.CenterCrop(self.crop), T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose(steps)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] (N x 3 x H x W) to the model's input space."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map model inputs back to [0, 1]-scaled images (not clamped)."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return x * std + mean
