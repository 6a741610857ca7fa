#!/usr/bin/env bash
# The paper's CIFAR-10 tables (Zhu et al., Tables 2-3 and the one-seed figure): teacher
# cifar-resnet56, independent judge and student cifar-resnet20, all on the shared JPEG test set.
#
#   SHARED=../shared OUT=results/paper bash benchmarks/paper_tables.sh                  # full, one GPU
#   SHARED=../shared OUT=results/cpu DEVICE=cpu AMP=none BATCH=64 WORKERS=1 \
#       PER_CLASS=100 ITERATIONS=500 EPOCHS=60 REAL_PER_CLASS=100 bash benchmarks/paper_tables.sh  # reduced, CPU
#
# 1. extract the CIFAR-10 JPEG train and test sets from $SHARED/data/cifar10/*.zip
# 2. collect a Scenario-A bundle of cifar-resnet56 from the 50,000 training images
# 3. synthesize cc (single-class batches) and di (DeepInversion, mixed-class batches) sets of
#    each PER_CLASS size (default 1000 and 5000 per class: 10K and 50K images)
# 4. evaluate each set (and the real training images) with cifar-resnet20 and the teacher;
#    Fréchet distance, KID and diversity in cifar-resnet20's features against the real test set
# 5. distill a cifar-resnet20 student from the teacher on each set and on real training images
#    (all 50,000, or the first REAL_PER_CLASS of each class)
# 6. Scenario C: one seed image per class (the first test image the teacher gets right), a
#    bundle from it, 8 images per class synthesized from it, shown beside the seed
# 7. print a summary table (also written to $OUT/summary.md)
#
# Every step is skipped when its output exists; synthesis and distillation resume an
# interrupted run, so the script can be run again until it completes.
set -euo pipefail

: "${SHARED:?set SHARED to the shared data folder (models/cifar10, data/cifar10)}"
: "${OUT:?set OUT to the results directory}"
DEVICE=${DEVICE:-cuda}
AMP=${AMP:-bf16}
BATCH=${BATCH:-256}
WORKERS=${WORKERS:-8}
PER_CLASS=${PER_CLASS:-1000 5000}
ITERATIONS=${ITERATIONS:-2000}
EPOCHS=${EPOCHS:-200}
REAL_PER_CLASS=${REAL_PER_CLASS:-all}
SOWMETA=${SOWMETA:-sowmeta}
PYTHON=${PYTHON:-python}

W56="$SHARED/models/cifar10/resnet56.safetensors"
W20="$SHARED/models/cifar10/resnet20.safetensors"
TEACHER=(--model cifar-resnet56 --weights "$W56")
JUDGE=(--model cifar-resnet20 --weights "$W20")
DATA="$OUT/cifar10"
BUNDLE="$OUT/bundles/c56-a"
SETS=()
for n in $PER_CLASS; do SETS+=("c56-cc-$n" "c56-di-$n"); done
REAL="real-train"
[[ $REAL_PER_CLASS == all ]] || REAL="real-train-$REAL_PER_CLASS"

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
if [[ $REAL_PER_CLASS != all && ! -d "$DATA/$REAL" ]]; then
    log "link the first $REAL_PER_CLASS training images of each class into $DATA/$REAL"
    "$PYTHON" - "$DATA/train" "$DATA/$REAL" "$REAL_PER_CLASS" <<'EOF'
import shutil
import sys
from pathlib import Path

train, out, n = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), int(sys.argv[3])
tmp = out.with_name(out.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
for folder in sorted(p for p in train.iterdir() if p.is_dir()):
    (tmp / folder.name).mkdir(parents=True)
    for image in sorted(f for f in folder.iterdir() if f.is_file())[:n]:
        (tmp / folder.name / image.name).symlink_to(image)
tmp.rename(out)
EOF
fi
REAL_DIR="$DATA/train"
[[ $REAL_PER_CLASS == all ]] || REAL_DIR="$DATA/$REAL"

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
    batching="--single-class"
    [[ $mode == di ]] && batching="--mixed"
    if [[ ! -e "$OUT/synth/$name.h5" ]]; then
        log "synthesize $name"
        "$SOWMETA" synthesize --bundle "$BUNDLE" --weights "$W56" --mode "$mode" $batching --classes all \
            --per-class "$per_class" --iterations "$ITERATIONS" --batch-size "$BATCH" --amp "$AMP" --seed 0 \
            --device "$DEVICE" --out "$OUT/synth/$name.h5" -q
    fi
done

# 4. evaluation; real training images are the baseline row
evaluate() {  # name, images
    local name=$1 images=$2
    if [[ ! -e "$OUT/eval/$name.json" ]]; then
        log "evaluate $name"
        "$SOWMETA" evaluate --data "$images" "${JUDGE[@]}" "${TEACHER[@]}" --feature-model cifar-resnet20 --feature-weights "$W20" \
            --reference "$DATA/test" --sheets "$OUT/sheets/$name" --batch-size 500 --workers "$WORKERS" \
            --device "$DEVICE" --json -q >"$OUT/eval/$name.json.tmp"
        mv "$OUT/eval/$name.json.tmp" "$OUT/eval/$name.json"
    fi
}
for name in "${SETS[@]}"; do evaluate "$name" "$OUT/synth/$name.h5"; done
evaluate "$REAL" "$REAL_DIR"

# 5. distillation (checkpoint every epoch; --resume continues, or returns a finished run)
distill() {  # name, images
    local name=$1 images=$2
    if [[ ! -e "$OUT/kd/$name/metrics.json" ]]; then
        log "distill $name"
        "$SOWMETA" distill --data "$images" "${TEACHER[@]}" --student cifar-resnet20 --test "$DATA/test" \
            --out "$OUT/kd/$name" --epochs "$EPOCHS" --amp "$AMP" --seed 0 --device "$DEVICE" --workers "$WORKERS" --resume -q
    fi
}
for name in "${SETS[@]}"; do distill "$name" "$OUT/synth/$name.h5"; done
distill "$REAL" "$REAL_DIR"

# 6. Scenario C: one seed per class, a bundle from it, images synthesized from that bundle
if [[ ! -d "$OUT/seeds" ]]; then
    log "pick one seed per class"
    "$PYTHON" - "$W56" "$DATA/test" "$OUT/seeds" <<'EOF'
import shutil
import sys
from pathlib import Path

import torch

from sowmeta.data import read_image
from sowmeta.models import load_model

model = load_model("cifar-resnet56", weights=sys.argv[1])
net, transform = model.module.eval(), model.preprocessing.transform()
test, out = Path(sys.argv[2]), Path(sys.argv[3])
tmp = out.with_name(out.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
for k, folder in enumerate(sorted(p for p in test.iterdir() if p.is_dir())):
    for image in sorted(folder.iterdir()):
        with torch.no_grad():
            if int(net(transform(read_image(image))[None]).argmax()) == k:
                (tmp / folder.name).mkdir(parents=True)
                shutil.copy(image, tmp / folder.name / image.name)
                break
tmp.rename(out)
EOF
fi
if [[ ! -e "$OUT/bundles/c56-c/sowmeta.json" ]]; then
    log "collect the Scenario-C bundle"
    "$SOWMETA" collect --model cifar-resnet56 --weights "$W56" --seeds "$OUT/seeds" --out "$OUT/bundles/c56-c" --device "$DEVICE"
fi
if [[ ! -e "$OUT/synth/c56-seed1.h5" ]]; then
    log "synthesize from one seed per class"
    "$SOWMETA" synthesize --bundle "$OUT/bundles/c56-c" --weights "$W56" --mode cc --classes all --per-class 8 \
        --iterations "$ITERATIONS" --amp "$AMP" --seed 0 --device "$DEVICE" --out "$OUT/synth/c56-seed1.h5" -q
fi
"$PYTHON" - "$OUT/seeds" "$OUT/synth/c56-seed1.h5" "$OUT/scenario-c.png" <<'EOF'
import sys

from sowmeta.models import CIFAR10_LABELS
from sowmeta.synth.export import readable_scale, save_png, sheet
from sowmeta.synthdata import load_images

seeds, seed_labels = load_images(sys.argv[1])
images, labels = load_images(sys.argv[2])
rows = [[*seeds[seed_labels == k], None, *images[labels == k]] for k in range(len(seeds))]
n = len(rows[0]) - 2
save_png(sheet(rows, row_labels=list(CIFAR10_LABELS), col_labels=[("seed", 1), ("", 1), ("synthesized from it", n)],
               scale=readable_scale(images.shape[-1])), sys.argv[3])
EOF

# 7. summary
"$PYTHON" - "$OUT" "${SETS[@]}" "$REAL" <<'EOF' | tee "$OUT/summary.md"
import json
import sys
from pathlib import Path

out, names = Path(sys.argv[1]), sys.argv[2:]


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
log "done: $OUT/summary.md, $OUT/scenario-c.png"
