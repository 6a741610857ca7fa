"""Collectors: record per-layer, per-class feature moments into a bundle (paper Sections 3.2-3.3).

* ``collect`` (``after_training.py``): after training, one pass of the model over a labelled dataset (Scenario A).
* ``TrainingCollector`` (``during_training.py``): during training, fed with each batch's labels by the user's loop.
* ``collect_seeds`` (``seeds.py``): from a few seed images per class (Scenario B) or one (Scenario C).

All three record through one ``StatsRecorder`` (``recorder.py``); ``collect`` and ``collect_seeds``
take one ``CollectOptions`` (``options.py``). Names are imported on first use, so the CLI reads
``CollectOptions``' fields without loading torch.
"""

from __future__ import annotations

from ..lazy import exports

_HOME = {
    "CollectOptions": ".options",
    "StatsRecorder": ".recorder",
    "TrainingCollector": ".during_training",
    "CollectReport": ".records",
    "collect": ".after_training",
    "collect_seeds": ".seeds",
    "seed_files": "..data.folders",
}

__all__ = list(_HOME)
__getattr__, __dir__ = exports(__name__, _HOME, globals())
