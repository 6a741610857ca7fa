"""Per-image and per-class feature moments: which implementation computes them (``dispatch.py``, one table), the
one-pass reductions (``reduce.py``), the fused BatchNorm kernel (``native.py``, built by ``native_build.py``,
``bn_moments.c``), the taps read while a model runs (``recording.py``), and the mergeable per-class moments
(``class_moments.py``)."""

from .class_moments import ClassMoments, LabelGroups
from .dispatch import TABLE, CentralMoments, DispatchLog, central_moments, raw_moments
from .recording import fused_batchnorms, recording_taps

__all__ = ["ClassMoments", "LabelGroups", "TABLE", "CentralMoments", "DispatchLog", "central_moments", "raw_moments", "fused_batchnorms", "recording_taps"]
