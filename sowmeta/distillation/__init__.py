"""Knowledge distillation from a synthesized set into a new student: the run (``training.py``) and its
hyper-parameters (``config.py``, importable without torch for the CLI's help, so names load on first use)."""

from __future__ import annotations

from ..lazy import exports

_HOME = {
    "DistillConfig": ".config",
    "DistillProgress": ".training",
    "DistillResult": ".training",
    "distill": ".training",
    "kd_loss": ".training",
    "augment": ".training",
    "CHECKPOINT": ".training",
    "STUDENT": ".training",
    "METRICS": ".training",
}

__all__ = list(_HOME)
__getattr__, __dir__ = exports(__name__, _HOME, globals())
