"""The synthesis engine: class-conditional model inversion (paper Eq. 1-7) on any device.

Four stages, each its own module: ``job.py`` *resolve* (a located bundle, the model, checks),
``plan.py`` *plan* (batches, seeds, initial images), ``run.py`` *run* (the ``Inverter`` of
``engine.py`` over this process's batches) and ``sinks.py`` *sink*; ``pipeline.py`` strings them
together. The objective is a sum of ``Term``s (``terms.py``; add yours with ``synthesize(..., terms=[...])``);
``config.py`` holds every knob. Names are imported on first use, so the CLI reads ``SynthConfig``'s
fields without loading torch.
"""

from __future__ import annotations

from ..lazy import exports

_HOME = {
    "MODES": ".config",
    "PRESETS": ".config",
    "SynthConfig": ".config",
    "Inverter": ".engine",
    "TapTarget": ".engine",
    "BatchResult": ".engine",
    "IterationInfo": ".engine",
    "Term": ".terms",
    "Step": ".terms",
    "FEATURE_LOSSES": ".losses",
    "register_feature_loss": ".losses",
    "synthesize": ".pipeline",
    "SynthResult": ".results",
    "SynthProgress": ".results",
    "Plan": ".plan",
    "RunPlan": ".plan",
    "plan_batches": ".plan",
    "Sink": ".sinks",
    "MemorySink": ".sinks",
    "HDF5Sink": ".sinks",
}

__all__ = list(_HOME)
__getattr__, __dir__ = exports(__name__, _HOME, globals())
