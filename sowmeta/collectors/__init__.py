"""Collectors: record per-layer, per-class feature moments into a bundle (paper Sections 3.2-3.3).

* ``collect`` (``after_training.py``): after training, one pass of the model over a labelled dataset (Scenario A).
* ``TrainingCollector`` (``during_training.py``): during training, fed with each batch's labels by the user's loop.
* ``collect_seeds`` (``seeds.py``): from a few seed images per class (Scenario B) or one (Scenario C).

All three record through one ``StatsRecorder`` (``recorder.py``).
"""

from ..data.folders import seed_files
from .after_training import collect
from .during_training import TrainingCollector
from .recorder import StatsRecorder
from .records import CollectReport
from .seeds import collect_seeds

__all__ = ["StatsRecorder", "TrainingCollector", "CollectReport", "collect", "collect_seeds", "seed_files"]
