"""Per-image and per-class feature moments: the one-pass reductions (``reduce.py``), the fused BatchNorm kernel
(``native.py``, built by ``native_build.py``), and the mergeable per-class moments (``class_moments.py``)."""

from .class_moments import ClassMoments, LabelGroups

__all__ = ["ClassMoments", "LabelGroups"]
