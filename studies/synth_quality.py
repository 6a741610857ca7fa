"""Quality of synthesized CIFAR-10 sets: teacher and independent-model accuracy, per-class Fréchet distance.

Run: ``python studies/synth_quality.py c56-cc.h5 c56-di.h5 --real data/cifar10/test --grid cmp.png``
(weights from ``$SOWMETA_SHARED/models/cifar10``). Features for the Fréchet distance come from
cifar-resnet20's penultimate layer (64-d), a network other than the teacher (cifar-resnet56).
Prints one markdown table, rows = sets, for docs/results.md; ``--grid`` also writes the sets side
by side (one row per class, the first ``--per-row`` images of each set).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sowmeta.env import shared_dir
from sowmeta.evaluation.metrics import per_class_frechet, run_model, top1_accuracy
from sowmeta.models import load_model
from sowmeta.data.image_sets import load_images


def roughness(x: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels of images in [0, 1]: noise shows up as a high value."""
    return float(((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()) / 2)


def file_roughness(path: Path) -> float:
    """``roughness`` of every image of a synthesis file or image folder."""
    return roughness(load_images(path)[0].float() / 255)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", type=Path, help="HDF5 synthesis files")
    ap.add_argument("--real", type=Path, required=True, help="real test images, class-per-folder")
    ap.add_argument("--models", type=Path, default=shared_dir() / "models" / "cifar10")
    ap.add_argument("--grid", type=Path, help="write the sets side by side, one row per class")
    ap.add_argument("--per-row", type=int, default=6, help="images per class and set in --grid")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    teacher = load_model("cifar-resnet56", weights=str(args.models / "resnet56.safetensors"))
    judge = load_model("cifar-resnet20", weights=str(args.models / "resnet20.safetensors"))
    real = run_model(judge, args.real, features=True)
    k = real.logits.shape[1]
    print(
        f"real test set: {len(real.labels)} images; cifar-resnet20 top-1 {top1_accuracy(real.logits, real.labels):.2%}; "
        f"roughness {file_roughness(args.real):.3f}"
    )
    print()
    print("| set | images | teacher (resnet56) top-1 | cifar-resnet20 top-1 | mean per-class FD (resnet20 features) | roughness | per-class FD |")
    print("|---|---|---|---|---|---|---|")
    for path in args.sets:
        t = run_model(teacher, path)
        j = run_model(judge, path, features=True)
        fd = per_class_frechet(j.features, j.labels, real.features, real.labels, num_classes=k)
        present = [v for v in fd if v is not None]
        mean_fd = sum(present) / len(present)
        cells = " ".join(f"{v:.1f}" if v is not None else "-" for v in fd)
        print(
            f"| {path.name} | {len(j.labels)} | {top1_accuracy(t.logits, t.labels):.1%} | {top1_accuracy(j.logits, j.labels):.1%} "
            f"| {mean_fd:.2f} | {file_roughness(path):.3f} | {cells} |"
        )
    if args.grid is not None:
        side_by_side(args.sets, args.grid, args.per_row)


def side_by_side(sets: list[Path], path: Path, per_row: int) -> None:
    """The sets side by side (columns labelled with their file names), one labelled row per class."""
    from sowmeta.models import CIFAR10_LABELS
    from sowmeta.data.export import readable_scale, save_png, sheet
    from sowmeta.data.image_sets import load_images

    loaded = [load_images(s) for s in sets]
    classes = sorted({int(c) for _, labels in loaded for c in labels.tolist()})
    rows = []
    for k in classes:
        row: list = []
        for i, (images, labels) in enumerate(loaded):
            mine = list(images[labels == k][:per_row])
            row += ([None] if i else []) + mine + [None] * (per_row - len(mine))
        rows.append(row)
    columns = [c for i, s in enumerate(sets) for c in ([("", 1)] if i else []) + [(s.stem, per_row)]]
    names = [CIFAR10_LABELS[k] if k < len(CIFAR10_LABELS) else str(k) for k in classes]
    save_png(sheet(rows, row_labels=names, col_labels=columns, scale=readable_scale(loaded[0][0].shape[-1], 64)), path)


if __name__ == "__main__":
    main()
