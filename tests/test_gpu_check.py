"""``benchmarks/gpu_check.sh`` runs end to end (on the CPU, at toy sizes) and prints one RESULT line per figure."""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = [
    "moments_max_rel_err",
    "synth_seconds_per_image",
    "synth_engine_over_bare",
    "synth_speedup_vs_di_ref",
    "synth_speedup_vs_di_frozen",
    "synth_peak_mib_per_image",
    "bf16_vs_fp32_loss",
    "bf16_vs_fp32_same_images",
    "collect_ratio_r50",
]


@pytest.mark.slow
def test_gpu_check_quick_prints_every_figure(tmp_path: Path):
    env = {**os.environ, "SOWMETA_COMPILE": "0", "SOWMETA_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--quick"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    results = dict(re.findall(r"^RESULT (\w+)=(\S+)", out.stdout, flags=re.M))
    assert list(results) == FIGURES
    values = {k: float(v) for k, v in results.items()}
    assert all(math.isfinite(v) and v >= 0 for v in values.values())
    assert values["moments_max_rel_err"] < 1e-5  # float32 sums of bf16 values against their float64 sums
    assert values["synth_seconds_per_image"] > 0 and values["synth_engine_over_bare"] > 0 and values["collect_ratio_r50"] > 0
    # AMP is float32 on the CPU: both precisions run the same arithmetic from the same start
    assert values["bf16_vs_fp32_loss"] < 1e-6 and values["bf16_vs_fp32_same_images"] < 1e-6
