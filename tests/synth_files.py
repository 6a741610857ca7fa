"""Tiny synthesis files for the evaluation and distillation tests, written with h5py in the reader's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["write_synth_h5"]


def write_synth_h5(
    path: Path,
    classes: int = 4,
    per_class: int = 6,
    size: int = 12,
    seed: int = 0,
    names: list[str] | None = None,
) -> Path:
    """``images`` uint8 [N, size, size, 3] with a class-dependent colour cast, ``labels`` int64, ``batch_done``, a ``labels`` attribute.

    The datasets and attributes are a subset of what ``sowmeta.synth`` writes, with the same
    dtypes (checked by ``test_synth.py::test_test_fixture_has_the_writers_layout``).
    """
    import h5py

    rng = np.random.default_rng(seed)
    casts = rng.uniform(0, 255, size=(classes, 3))
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    images = np.clip(rng.normal(casts[labels][:, None, None, :], 40, size=(len(labels), size, size, 3)), 0, 255).astype(np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels)
        f.create_dataset("confidence", data=np.ones(len(labels), dtype=np.float32))
        f.create_dataset("loss", data=np.zeros(len(labels), dtype=np.float32))
        f.create_dataset("prediction", data=labels.copy())
        f.create_dataset("batch_done", data=np.ones(1, dtype=np.uint8))  # the writer's bookkeeping: one batch, finished
        f.attrs["format"] = "sowmeta-synth"
        f.attrs["config"] = json.dumps({"mode": "cc", "seed": seed})
        f.attrs["mode"] = "cc"
        f.attrs["labels"] = json.dumps(names if names is not None else [f"c{k}" for k in range(classes)])
    return path
