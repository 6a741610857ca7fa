"""Sketch-based synthesis on CIFAR-10 (paper Sec. 4.2): sketches from test photos, Scenario-B statistics, sketch -> image.

Run: python studies/sketch_study.py --real data/cifar10/test --out runs/sketch

1. photos: the first ``--seeds`` test images of each class cifar-resnet56 classifies correctly;
   sketches: their strongest Sobel edges drawn black on white (``sowmeta.synth.sketch.edge_sketch``);
2. two Scenario-B bundles on cifar-resnet56: from the photos, and from the sketches themselves
   (``collect --seeds --keep-rejected``: the teacher does not take sketches for their class);
3. synthesis from the first ``--per-class`` sketches of every class (no added noise), with each
   bundle, and from noise with the photos' bundle (the faithfulness baseline), intermediate
   images every quarter of the run (``--save-every``);
4. faithfulness: ``sowmeta.synth.sketch.edge_overlap`` between each sketch and its image (the noise
   images paired with the sketches of their class), recognisability by the teacher and judges;
5. OUT/pairs.png (sketch | its photo | each variant), OUT/steps.png (paper Fig. 6b), OUT/summary.md.
Settings: the cifar preset with the pixel parameterization (a sigmoid-based one would start
black and white sketch pixels saturated) and ``--overrides`` JSON on top.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from sowmeta import SynthConfig, load_model, synthesize
from sowmeta.collectors import collect_seeds
from sowmeta.env import shared_dir
from sowmeta.evaluation.metrics import run_model, top1_accuracy
from sowmeta.models import CIFAR10_LABELS
from sowmeta.synth.sketch import edge_overlap, edge_sketch
from sowmeta.data.export import readable_scale, save_png, sheet
from sowmeta.data.image_sets import load_images

VARIANTS = {  # name -> (bundle, init)
    "photo-stats, sketch init": ("b-photos", "sketch"),
    "sketch-stats, sketch init": ("b-sketches", "sketch"),
    "photo-stats, noise init": ("b-photos", "noise"),
}


def pick_photos(teacher: object, test: Path, out: Path, n: int) -> None:
    """out/<class>/: the first ``n`` test images of each class the teacher classifies correctly."""
    from PIL import Image

    images, labels = load_images(test)
    with torch.no_grad():
        pred = run_model(teacher, torch.utils.data.TensorDataset(images, labels)).logits.argmax(1)
    for k, name in enumerate(CIFAR10_LABELS):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in torch.nonzero((labels == k) & (pred == k)).flatten()[:n].tolist():
            Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")


def write_folder(images: torch.Tensor, labels: torch.Tensor, names: list[str], out: Path) -> None:
    from PIL import Image

    for i, (img, k) in enumerate(zip(images, labels.tolist())):
        (out / CIFAR10_LABELS[k]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(out / CIFAR10_LABELS[k] / names[i])


def top1(model: object, images: torch.Tensor, labels: torch.Tensor) -> float:
    out = run_model(model, torch.utils.data.TensorDataset(images, labels))
    return top1_accuracy(out.logits, out.labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, required=True, help="CIFAR-10 test images, class-per-folder")
    ap.add_argument("--out", type=Path, default=Path("runs/sketch"))
    ap.add_argument("--seeds", type=int, default=50, help="photos (and sketches) per class for the Scenario-B bundles")
    ap.add_argument("--per-class", type=int, default=4, help="sketches per class to synthesize from")
    ap.add_argument("--density", type=float, default=0.15, help="fraction of pixels a sketch's lines cover")
    ap.add_argument("--overrides", default="{}", help="JSON overrides of SynthConfig.cifar(param='pixel')")
    ap.add_argument("--judge", action="append", default=[], help="NAME=WEIGHTS of a judge; repeatable")
    ap.add_argument("--only-prepare", action="store_true", help="stop after the bundles (sketches, photos, statistics)")
    ap.add_argument("--models", type=Path, default=shared_dir() / "models" / "cifar10")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_model("cifar-resnet56", weights=str(args.models / "resnet56.safetensors"))

    if not (out / "photos").is_dir():
        pick_photos(teacher, args.real, out / "photos.tmp", args.seeds)
        (out / "photos.tmp").rename(out / "photos")
    photos, photo_labels = load_images(out / "photos")
    names = [p.name for k in CIFAR10_LABELS for p in sorted((out / "photos" / k).iterdir())]
    if not (out / "sketches").is_dir():
        write_folder(edge_sketch(photos, density=args.density), photo_labels, names, out / "sketches.tmp")
        (out / "sketches.tmp").rename(out / "sketches")
    sketches, _ = load_images(out / "sketches")
    first = torch.cat([torch.nonzero(photo_labels == k).flatten()[: args.per_class] for k in range(10)])
    if not (out / "init").is_dir():
        write_folder(sketches[first], photo_labels[first], [names[i] for i in first.tolist()], out / "init.tmp")
        (out / "init.tmp").rename(out / "init")

    for bundle, folder, keep in (("b-photos", "photos", False), ("b-sketches", "sketches", True)):
        if not (out / "bundles" / bundle / "sowmeta.json").exists():
            _, report = collect_seeds(teacher, out / folder, keep_rejected=keep, out=out / "bundles" / bundle, overwrite=True)
            print(f"{bundle}: {report}", flush=True)

    if args.only_prepare:
        return
    overrides = json.loads(args.overrides)
    cfg = SynthConfig.cifar(**{"param": "pixel", **overrides})
    cfg = cfg.replace(save_every=-(-cfg.iterations // 4))
    seconds: dict[str, float] = {}
    for name, (bundle, init) in VARIANTS.items():
        path = out / f"{name.replace(', ', '-').replace(' ', '-')}.h5"
        if not path.exists():
            start = time.perf_counter()
            c = cfg.replace(init="images", init_noise=0.0) if init == "sketch" else cfg
            synthesize(out / "bundles" / bundle, teacher, per_class=args.per_class, config=c, out=path,
                       init_images=out / "init" if init == "sketch" else None, overwrite=True)
            (path.with_suffix(".seconds")).write_text(f"{time.perf_counter() - start:.0f}")
        seconds[name] = float(path.with_suffix(".seconds").read_text())

    init_sketches, init_labels = load_images(out / "init")
    init_photos = photos[first]
    judges = [load_model(j.partition("=")[0], weights=j.partition("=")[2]) for j in args.judge]
    rows, results = [], {}
    for name in VARIANTS:
        path = out / f"{name.replace(', ', '-').replace(' ', '-')}.h5"
        images, labels = load_images(path)
        order = torch.argsort(labels, stable=True)  # mixed batches interleave classes; the sketches go class by class
        images, labels = images[order], labels[order]
        if not torch.equal(labels, init_labels):
            raise SystemExit(f"{path}: labels differ from the sketches' order")
        with h5py.File(path) as f:
            teacher_top1 = float((f["prediction"][:] == f["labels"][:]).mean())
        overlap = edge_overlap(init_sketches, images)
        exact = edge_overlap(init_sketches, images, tolerance=0)
        accs = {j.name: top1(j, images, labels) for j in judges}  # the noise images pair with the sketches by position too
        results[name] = {"images": images, "overlap": float(overlap.mean()), "teacher": teacher_top1, "judges": accs}
        rows.append(f"| {name} | {len(labels)} | {exact.mean():.1%} | {overlap.mean():.1%} (±{overlap.std() / len(overlap) ** 0.5:.1%}) | {teacher_top1:.1%} | "
                    + " | ".join(f"{accs[j.name]:.1%}" for j in judges) + f" | {seconds[name]:.0f} |")
    photo_overlap = edge_overlap(init_sketches, init_photos)
    unrelated = edge_overlap(init_sketches, init_photos.roll(1, dims=0))  # each sketch against another class's photo
    with open(out / "summary.md", "w") as f:
        head = "| variant | images | edge overlap with the sketch (exact) | (within 1 px) | teacher top-1 | " + " | ".join(f"{j.name} top-1" for j in judges) + " | seconds |"
        print(head, "|" + "---|" * (head.count("|") - 1), *rows, sep="\n", file=f)
        exact_ref = [edge_overlap(init_sketches, p, tolerance=0).mean() for p in (init_photos, init_photos.roll(1, dims=0))]
        print(f"\nreference (exact, within 1 px): the sketch's own photo {exact_ref[0]:.1%}, {photo_overlap.mean():.1%}; "
              f"another class's photo {exact_ref[1]:.1%}, {unrelated.mean():.1%}", file=f)
        print(f"settings: {json.dumps({k: v for k, v in cfg.to_dict().items() if v != SynthConfig.cifar().to_dict().get(k)})} over the cifar preset", file=f)
    print((out / "summary.md").read_text())

    # the pairs: sketch | its photo | each variant; two per class
    show = min(2, args.per_class)
    grid_rows = []
    for k in range(10):
        idx = torch.nonzero(init_labels == k).flatten()[:show].tolist()
        row: list = []
        for n, i in enumerate(idx):
            row += ([None] if n else []) + [init_sketches[i], init_photos[i], *[results[v]["images"][i] for v in VARIANTS]]
        grid_rows.append(row)
    cols = []
    for n in range(show):
        cols += ([("", 1)] if n else []) + [("sketch", 1), ("photo", 1), ("ph.stats", 1), ("sk.stats", 1), ("noise", 1)]
    save_png(sheet(grid_rows, row_labels=list(CIFAR10_LABELS), col_labels=cols, scale=readable_scale(32, 64)), out / "pairs.png")

    # the steps (paper Fig. 6b): the first sketch of each class through the run, photo statistics
    path = out / "photo-stats-sketch-init.h5"
    with h5py.File(path) as f:
        snaps = torch.from_numpy(np.asarray(f["snapshots"][:])).permute(0, 1, 4, 2, 3)
        snaps = snaps[:, torch.argsort(torch.from_numpy(f["labels"][:]), stable=True)]  # in the sketches' order
        its = [int(i) for i in f["snapshots"].attrs["iterations"]]
    images = results["photo-stats, sketch init"]["images"]
    steps = []
    for k in range(10):
        i = int(torch.nonzero(init_labels == k).flatten()[0])
        steps.append([init_sketches[i], *[s[i] for s in snaps], images[i]])
    save_png(sheet(steps, row_labels=list(CIFAR10_LABELS), col_labels=[("sketch", 1), *[(f"{it}", 1) for it in its], (f"{cfg.iterations}", 1)],
                   scale=readable_scale(32, 64)), out / "steps.png")


if __name__ == "__main__":
    main()
