#!/usr/bin/env bash
# The GPU figures in one go (benchmarks/gpu_check.py says which): one RESULT line per figure.
#   bash benchmarks/gpu_check.sh                       # one CUDA GPU, about 5 minutes (budget: 8)
#   bash benchmarks/gpu_check.sh --device cpu --quick  # the same steps at toy sizes (a test runs this)
# Offline: random-init torchvision resnet50, random targets. Uses .venv/bin/python when there is one.
# Then, where the ImageNet files are (SHARED, default ../shared) and timm is installed, the real network at
# 224 px: studies/imagenet.py's held-out classes at the imagenet preset, batch 64, bf16 (RESULT imagenet_*
# lines: Lite1's top-1, naturalness ratios, s/image), about 5 more minutes; IMAGENET=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
timeout --signal=INT 480 "$PY" benchmarks/gpu_check.py "$@"
SHARED="${SHARED:-../shared}"
case " $* " in *" --quick "*) exit 0 ;; esac
if [ "${IMAGENET:-1}" != 0 ] && [ -f "$SHARED/models/imagenet/efficientnet-lite0.safetensors" ] && "$PY" -c "import timm" 2>/dev/null; then
    exec timeout --signal=INT 480 "$PY" studies/imagenet.py --shared "$SHARED" --out "${OUT:-runs/imagenet-gpu}" --size gpu \
        --device cuda --amp bf16 --batch-size 64 --only defaults
fi
