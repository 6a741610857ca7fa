#!/usr/bin/env bash
# The paper's Figure 3 (b)/(c) on a BN-fused network: Scenario B (50 seed images per class) and
# Scenario C (one seed per class) collected on cifar-resnet56 with its BatchNorm folded into the
# convolutions (`collect --fuse`), images synthesized from each bundle, judged by two networks
# that took no part (cifar-resnet20 and cifar-vgg), with grids; and DeepInversion (`--mode di`)
# shown to be impossible there (its one-line error goes to $OUT/di-error.txt).
#
#   SHARED=../shared OUT=runs/fused bash studies/fused_scenarios.sh
#
# Seeds are training images the (fused) teacher classifies correctly: the first 50 of each class
# for B, the first one for C. Sizes: PER_CLASS images per class (16) at the cifar preset's
# iterations (ITERATIONS to change them); SYNTH_ARGS adds options to `sowmeta synthesize` (e.g.
# "--mixed --batch-size 20" for small CPU runs). Every step is skipped when its output exists.
set -euo pipefail

: "${SHARED:?set SHARED to the shared data folder (models/cifar10, data/cifar10)}"
: "${OUT:?set OUT to the results directory}"
DATA=${DATA:-data/cifar10}            # extracted train/ and test/ (python -m zipfile -e ... data/cifar10)
VGG=${VGG:-runs/judges/cifar-vgg.safetensors}
PER_CLASS=${PER_CLASS:-16}
ITERATIONS=${ITERATIONS:-}
read -r -a EXTRA <<<"${SYNTH_ARGS:-}"
SOWMETA=${SOWMETA:-sowmeta}
PYTHON=${PYTHON:-python}
W56="$SHARED/models/cifar10/resnet56.safetensors"
W20="$SHARED/models/cifar10/resnet20.safetensors"
ITER=()
[[ -z $ITERATIONS ]] || ITER=(--iterations "$ITERATIONS")

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
mkdir -p "$OUT"/{bundles,synth,eval}

# 1. seeds: the first 50 (B) and the first 1 (C) training images of each class the fused teacher gets right
if [[ ! -d "$OUT/seeds-b" ]]; then
    log "pick seeds"
    "$PYTHON" - "$W56" "$DATA/train" "$OUT" <<'EOF'
import shutil
import sys
from pathlib import Path

import torch

from sowmeta.data import read_image
from sowmeta.fuse import fuse_bn
from sowmeta.models import load_model

model = load_model("cifar-resnet56", weights=sys.argv[1])
net = fuse_bn(model.module.eval(), torch.rand(1, 3, 32, 32))
transform = model.preprocessing.transform()
train, out = Path(sys.argv[2]), Path(sys.argv[3])
for name, n in (("seeds-c", 1), ("seeds-b", 50)):
    tmp = out / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for k, folder in enumerate(sorted(p for p in train.iterdir() if p.is_dir())):
        (tmp / folder.name).mkdir(parents=True)
        kept = 0
        for image in sorted(folder.iterdir()):
            with torch.no_grad():
                if int(net(transform(read_image(image))[None]).argmax()) == k:
                    shutil.copy(image, tmp / folder.name / image.name)
                    kept += 1
            if kept == n:
                break
    tmp.rename(out / name)
EOF
fi

# 2. bundles on the fused network (collect --fuse folds BatchNorm first; the seeds are inference-checked)
for s in b c; do
    if [[ ! -e "$OUT/bundles/c56-fused-$s/sowmeta.json" ]]; then
        log "collect Scenario ${s^^} on the fused network"
        "$SOWMETA" collect --model cifar-resnet56 --weights "$W56" --fuse --seeds "$OUT/seeds-$s" --out "$OUT/bundles/c56-fused-$s" --workers 0 -q
    fi
done

# 3. DeepInversion has nothing to match on a fused network: its one-line error
if [[ ! -e "$OUT/di-error.txt" ]]; then
    if "$SOWMETA" synthesize --bundle "$OUT/bundles/c56-fused-b" --weights "$W56" --mode di --per-class 1 --iterations 1 \
        --out "$OUT/synth/di.h5" -q 2>"$OUT/di-error.txt"; then
        echo "di unexpectedly ran on the fused network" >&2
        exit 1
    fi
    log "di: $(cat "$OUT/di-error.txt")"
fi

# 4. synthesis from each bundle (cc, the cifar preset), then both judges
for s in b c; do
    name="fused-$s"
    if [[ ! -e "$OUT/synth/$name.h5" ]]; then
        log "synthesize $name"
        "$SOWMETA" synthesize --bundle "$OUT/bundles/c56-fused-$s" --weights "$W56" --mode cc --per-class "$PER_CLASS" "${ITER[@]}" "${EXTRA[@]}" \
            --seed 0 --out "$OUT/synth/$name.h5" -q
    fi
    for judge in "cifar-resnet20 $W20" "cifar-vgg $VGG"; do
        set -- $judge
        if [[ ! -e "$OUT/eval/$name.$1.json" ]]; then
            log "evaluate $name with $1"
            "$SOWMETA" evaluate --data "$OUT/synth/$name.h5" --model "$1" --weights "$2" --feature-model "$1" --feature-weights "$2" \
                --reference "$DATA/test" --workers 0 --kid-subsets 50 --json -q >"$OUT/eval/$name.$1.json.tmp"
            mv "$OUT/eval/$name.$1.json.tmp" "$OUT/eval/$name.$1.json"
        fi
    done
done

# 5. grids (seeds | synthesized) and the summary table
"$PYTHON" - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json
import sys
from pathlib import Path

from sowmeta.models import CIFAR10_LABELS
from sowmeta.synth.export import readable_scale, save_png, sheet
from sowmeta.synthdata import load_images

out = Path(sys.argv[1])


def num(value, spec):  # KID and diversity need two images of a class: None below that
    return "n/a" if value is None else format(value, spec)


print("| scenario | seeds per class | images | teacher (fused) top-1 | cifar-resnet20 top-1 (real) | cifar-vgg top-1 (real) "
      "| per-class KID, vgg features (real floor) | diversity, vgg (real) |")
print("|---|---|---|---|---|---|---|---|")
for s, seeds in (("b", 50), ("c", 1)):
    name = f"fused-{s}"
    images, labels = load_images(out / "synth" / f"{name}.h5")
    seed_images, seed_labels = load_images(out / f"seeds-{s}")
    show = min(4, seeds)
    rows = [[*seed_images[seed_labels == k][:show], None, *images[labels == k][:8]] for k in range(10)]
    save_png(sheet(rows, row_labels=list(CIFAR10_LABELS), col_labels=[("seeds" if show > 1 else "seed", show), ("", 1), ("synthesized", 8)],
                   scale=readable_scale(32, 64)), out / f"{name}.png")
    ev = {j: json.loads((out / "eval" / f"{name}.{j}.json").read_text()) for j in ("cifar-resnet20", "cifar-vgg")}
    r20, vgg = ev["cifar-resnet20"], ev["cifar-vgg"]
    import h5py

    with h5py.File(out / "synth" / f"{name}.h5") as f:
        teacher = float((f["prediction"][:] == f["labels"][:]).mean())
    a20, av = r20["accuracy"][0], vgg["accuracy"][0]
    c, d = vgg["class_distances"], vgg["diversity"]
    print(f"| {s.upper()} | {seeds} | {vgg['images']} | {teacher:.1%} | {a20['top1']:.1%} ({a20['real_top1']:.1%}) | {av['top1']:.1%} ({av['real_top1']:.1%}) "
          f"| {num(c['mean_kid'], '.4f')} ({num(c['mean_kid_real'], '.4f')}) | {num(d['mean'], '.3f')} ({num(d['reference_mean'], '.3f')}) |")
print()
print("di on the fused network: " + (out / "di-error.txt").read_text().strip())
EOF
log "done: $OUT/summary.md, $OUT/fused-b.png, $OUT/fused-c.png"
