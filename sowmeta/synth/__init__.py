"""The synthesis engine: class-conditional model inversion (paper Eq. 1-7) on any device."""

from .config import MODES, SynthConfig
from .engine import BatchResult, Inverter, IterationInfo, TapTarget
from .losses import FEATURE_LOSSES, register_feature_loss
from .synthesize import SynthProgress, SynthResult, synthesize
from .plan import Plan, RunPlan, plan_batches
from .sinks import HDF5Sink, MemorySink, Sink

__all__ = [
    "MODES",
    "SynthConfig",
    "Inverter",
    "TapTarget",
    "BatchResult",
    "IterationInfo",
    "FEATURE_LOSSES",
    "register_feature_loss",
    "synthesize",
    "SynthResult",
    "SynthProgress",
    "Plan",
    "RunPlan",
    "plan_batches",
    "Sink",
    "MemorySink",
    "HDF5Sink",
]
