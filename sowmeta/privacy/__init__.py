"""Privacy: release statistics with differential privacy, and measure what a bundle gives away.

* ``accountant.py``: the Gaussian mechanism's noise multiplier for (epsilon, delta), from a
  maintained accountant (opacus, ``pip install 'sowmeta[dp]'``).
* ``clipping.py``: each image's contribution to its class's sums bounded (``ClippedSums``), its
  sensitivity, and the one noisy release that turns the sums into per-class moments.
* ``membership.py``: a likelihood-ratio membership test on per-image feature moments against a bundle.
* ``reconstruction.py``: how close synthesized images come to the collection's images.
* ``auditor.py``: both, on image folders, as one report (``sowmeta audit``).
"""

from __future__ import annotations

from ..lazy import exports

_HOME = {
    "ClippedSums": ".clipping",
    "Accounting": ".accountant",
    "noise_multiplier": ".accountant",
    "advantage_bound": ".membership",
    "AuditReport": ".auditor",
    "audit": ".auditor",
}

__all__ = list(_HOME)
__getattr__, __dir__ = exports(__name__, _HOME, globals())
