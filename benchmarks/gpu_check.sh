#!/usr/bin/env bash
# The GPU figures in one go (benchmarks/gpu_check.py says which): one RESULT line per figure.
#   bash benchmarks/gpu_check.sh                       # one CUDA GPU, about 5 minutes (budget: 8)
#   bash benchmarks/gpu_check.sh --device cpu --quick  # the same steps at toy sizes (a test runs this)
# Offline: random-init torchvision resnet50, random targets. Uses .venv/bin/python when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
exec timeout --signal=INT 480 "$PY" benchmarks/gpu_check.py "$@"
