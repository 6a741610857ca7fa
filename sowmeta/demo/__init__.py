"""``sowmeta demo``: the whole idea, offline, in a few minutes (``run.py``), on a dataset made for it (``data.py``)."""

from .run import DemoConfig, DemoReport, run_demo

__all__ = ["DemoConfig", "DemoReport", "run_demo"]
