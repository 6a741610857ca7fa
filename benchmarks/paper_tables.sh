#!/usr/bin/env bash
# The paper's CIFAR-10 tables on one GPU machine: teacher cifar-resnet56, student cifar-resnet20.
#
#   SHARED=/path/to/shared OUT=/path/to/results bash benchmarks/paper_tables.sh
#
# 1. extract the CIFAR-10 JPEG train and test sets from $SHARED/data/cifar10/*.zip
# 2. collect a Scenario-A bundle of cifar-resnet56 from the 50,000 training images
# 3. synthesize cc (single-class batches) and di (DeepInversion, mixed-class batches) sets of
#    1000 and 5000 images per class (10K and 50K images)
# 4. evaluate each set (and the real training set) with cifar-resnet20 and the teacher;
#    Fréchet distance, KID and diversity in cifar-resnet20's features against the real test set
# 5. distill a cifar-resnet20 student from the teacher on each set and on the real training set
# 6. print a summary table (also written to $OUT/summary.md)
#
# Every step is skipped when its output exists; synthesis and distillation resume an
# interrupted run, so the script can be run again until it completes.
# Overrides: DEVICE (cuda), WORKERS (8), ITERATIONS (2000), EPOCHS (200), SOWMETA (sowmeta), PYTHON (python).
set -euo pipefail

: "${SHARED:?set SHARED to the shared data folder (models/cifar10, data/cifar10)}"
: "${OUT:?set OUT to the results directory}"
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-8}
ITERATIONS=${ITERATIONS:-2000}
EPOCHS=${EPOCHS:-200}
SOWMETA=${SOWMETA:-sowmeta}
PYTHON=${PYTHON:-python}

W56="$SHARED/models/cifar10/resnet56.safetensors"
W20="$SHARED/models/cifar10/resnet20.safetensors"
TEACHER="cifar-resnet56=$W56"
JUDGE="cifar-resnet20=$W20"
DATA="$OUT/cifar10"
BUNDLE="$OUT/bundles/c56-a"
SETS=(c56-cc-1000 c56-cc-5000 c56-di-1000 c56-di-5000)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$OUT"/{bundles,synth,eval,sheets,kd}

# 1. data: extract beside, then rename, so an interrupted extraction is never taken as complete
for split in train test; do
    if [[ ! -d "$DATA/$split" ]]; then
        log "extract CIFAR-10 $split"
        rm -rf "$DATA.tmp"
        "$PYTHON" -m zipfile -e "$SHARED/data/cifar10/$split.zip" "$DATA.tmp"
        mkdir -p "$DATA"
        mv "$DATA.tmp/$split" "$DATA/$split"
        rm -rf "$DATA.tmp"
    fi
done

# 2. Scenario-A bundle (written atomically by collect)
if [[ ! -e "$BUNDLE/sowmeta.json" ]]; then
    log "collect $BUNDLE"
    "$SOWMETA" collect --model cifar-resnet56 --weights "$W56" --data "$DATA/train" --out "$BUNDLE" \
        --batch-size 256 --workers "$WORKERS" --device "$DEVICE"
fi

# 3. synthesis (OUT.partial until complete; a re-run resumes it)
for name in "${SETS[@]}"; do
    mode=$(cut -d- -f2 <<<"$name")
    per_class=$(cut -d- -f3 <<<"$name")
    mixed=""
    if [[ $mode == di ]]; then mixed="--mixed"; fi
    if [[ ! -e "$OUT/synth/$name.h5" ]]; then
        log "synthesize $name"
        "$SOWMETA" synthesize --bundle "$BUNDLE" --weights "$W56" --mode "$mode" $mixed --classes all \
            --per-class "$per_class" --iterations "$ITERATIONS" --batch-size 256 --amp bf16 --seed 0 \
            --device "$DEVICE" --out "$OUT/synth/$name.h5" -q
    fi
done

# 4. evaluation; the real training set is the baseline row
evaluate() {  # name, images
    local name=$1 images=$2
    if [[ ! -e "$OUT/eval/$name.json" ]]; then
        log "evaluate $name"
        "$SOWMETA" evaluate "$images" --model "$JUDGE" --model "$TEACHER" --feature-model "$JUDGE" \
            --reference "$DATA/test" --sheets "$OUT/sheets/$name" --batch-size 1000 --workers "$WORKERS" \
            --device "$DEVICE" --json >"$OUT/eval/$name.json.tmp"
        mv "$OUT/eval/$name.json.tmp" "$OUT/eval/$name.json"
    fi
}
for name in "${SETS[@]}"; do evaluate "$name" "$OUT/synth/$name.h5"; done
evaluate real-train "$DATA/train"

# 5. distillation (checkpoint every epoch; --resume continues, or returns a finished run)
distill() {  # name, images
    local name=$1 images=$2
    log "distill $name"
    "$SOWMETA" distill --synth "$images" --teacher "$TEACHER" --student cifar-resnet20 --test "$DATA/test" \
        --out "$OUT/kd/$name" --epochs "$EPOCHS" --seed 0 --device "$DEVICE" --workers "$WORKERS" --resume -q
}
for name in "${SETS[@]}"; do distill "$name" "$OUT/synth/$name.h5"; done
distill real-train "$DATA/train"

# 6. summary
"$PYTHON" - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
names = ["c56-cc-1000", "c56-cc-5000", "c56-di-1000", "c56-di-5000", "real-train"]


def pct(v):
    return "-" if v is None else f"{100 * v:.2f}"


print("| set | images | cifar-resnet56 top-1 | cifar-resnet20 top-1 | IS (r20) | FD (r20) | KID (r20) | mean class FD (r20) "
      "| diversity (r20) | KD student test top-1 | best | teacher test top-1 |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in names:
    ev = json.loads((out / "eval" / f"{name}.json").read_text())
    kd = json.loads((out / "kd" / name / "metrics.json").read_text())
    acc = {a["network"].partition("=")[0]: a["top1"] for a in ev["accuracy"]}
    d = ev["distances"]
    print(f"| {name} | {ev['images']} | {pct(acc.get('cifar-resnet56'))} | {pct(acc.get('cifar-resnet20'))} "
          f"| {ev['inception_score']['mean']:.2f} | {d['frechet']:.3f} | {d['kid_mean']:.4f} | {d['mean_class_frechet']:.3f} "
          f"| {ev['diversity']['mean']:.3f} (real test {ev['diversity']['reference_mean']:.3f}) "
          f"| {pct(kd['final_test_accuracy'])} | {pct(kd['best_test_accuracy'])} | {pct(kd['teacher_test_accuracy'])} |")
print()
print(f"Test set: {ev['distances']['reference_images']} JPEG CIFAR-10 test images; scores in cifar-resnet20's "
      f"penultimate features; students: cifar-resnet20, {kd['config']['epochs']} epochs, T={kd['config']['temperature']}.")
EOF
log "done: $OUT/summary.md"
