"""``TrainingCollector``: Scenario A during training, fed with each batch's labels by the user's own loop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..bundle import Bundle, SourceRecord
from ..errors import ConfigError
from ..models.preprocess import Preprocessing
from ..models.taps import resolve_taps
from .records import model_record
from .recorder import StatsRecorder

__all__ = ["TrainingCollector"]


class TrainingCollector:
    """Record statistics inside the user's own training loop (Scenario A proper).

    It never changes the forward result or the gradients: features are detached and reduced
    under ``no_grad``. Example::

        collector = TrainingCollector(model, num_classes=10)
        for x, y in loader:
            with collector.observe(y):
                loss = F.cross_entropy(model(x), y)
            loss.backward(); opt.step(); opt.zero_grad()
        bundle = collector.to_bundle(architecture="my-net", labels=classes, preprocessing=prep)
    """

    def __init__(self, model: nn.Module, *, num_classes: int, taps: str | Sequence[str] = "auto", prefix_tokens: int = 0) -> None:
        self.model = model
        self.recorder = StatsRecorder(model, resolve_taps(model, taps, prefix_tokens=prefix_tokens), num_classes)

    @contextmanager
    def observe(self, labels: torch.Tensor) -> Iterator[None]:
        """Record the forward passes inside the block as belonging to ``labels``."""
        self.recorder.set_labels(labels)
        try:
            with self.recorder.hooks():
                yield
        finally:
            self.recorder.set_labels(None)

    def reset(self) -> None:
        """Drop what was recorded (collect only the last epoch, when the weights have settled)."""
        self.recorder.reset()

    def to_bundle(
        self,
        *,
        architecture: str,
        preprocessing: Preprocessing,
        labels: Sequence[str] | None = None,
        weights: str | None = None,
        data: str = "training loop",
    ) -> Bundle:
        """Freeze what was recorded into a Scenario-A bundle of the model's current weights."""
        k = self.recorder.num_classes
        if labels is not None and len(labels) != k:
            raise ConfigError(f"{len(labels)} labels given for {k} classes; pass one label per class (index = class)")
        self.recorder.reduce()
        record = model_record(architecture, self.model, k, list(labels or [str(i) for i in range(k)]), weights=weights)
        source = SourceRecord("A", "during-training", data, 0)
        # In training, each batch's normalization (and dropout, and the moving weights) shifts whole images'
        # features, which inflates how much the images' means differ (twice as much at the demo's last tap).
        return Bundle.from_moments(
            self.recorder.moments, self.recorder.taps, model=record, preprocessing=preprocessing, source=source, image_var=False
        )
