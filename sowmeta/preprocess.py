"""Input preprocessing: recorded in every bundle so that synthesis and evaluation match collection."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["Preprocessing", "IMAGENET_MEAN", "IMAGENET_STD"]

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
