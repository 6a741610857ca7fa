"""Probe synthesis settings on a few CIFAR-10 classes: how the CIFAR preset was chosen.

Run: python studies/synth_tune.py --bundle runs/bundles/c56-a --real data/cifar10/test \
        'base:{"alpha_tv": 1e-4, "first_tap_multiplier": 1}' 'tv1e-1:{"alpha_tv": 0.1}' ...
Each argument is NAME:JSON, overrides of ``SynthConfig.cifar()``. For each, cifar-resnet56
synthesizes 16 images of automobile, cat and ship (500 iterations by default) and the row
reports the teacher's accuracy, the independent cifar-resnet20's accuracy, the mean per-class
Fréchet distance to the real test images of those classes in cifar-resnet20's features, and
the roughness (mean absolute difference of neighbouring pixels; real images for comparison).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from sowmeta import SynthConfig, load_model, synthesize
from sowmeta.env import shared_dir
from sowmeta.evaluation.metrics import per_class_frechet, run_model, top1_accuracy
from sowmeta.data.image_sets import load_images
from synth_quality import roughness  # studies/ is on sys.path when a script here runs

CLASSES = [1, 3, 8]  # automobile, cat, ship


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probes", nargs="+", help="NAME:JSON overrides of SynthConfig.cifar()")
    ap.add_argument("--bundle", required=True, help="Scenario-A bundle of cifar-resnet56")
    ap.add_argument("--real", type=Path, required=True, help="real test images, class-per-folder")
    ap.add_argument("--per-class", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--models", type=Path, default=shared_dir() / "models" / "cifar10")
    ap.add_argument("--grids", type=Path, help="write each probe's images to GRIDS/NAME.png")
    args = ap.parse_args()
    teacher = load_model("cifar-resnet56", weights=str(args.models / "resnet56.safetensors"))
    judge = load_model("cifar-resnet20", weights=str(args.models / "resnet20.safetensors"))
    ref = run_model(judge, args.real, features=True)
    real_x, real_y = load_images(args.real)
    real_rough = roughness(real_x[torch.isin(real_y, torch.tensor(CLASSES))].float() / 255)
    print(f"classes {CLASSES}, {args.per_class} images each, {args.iterations} iterations; real roughness {real_rough:.3f}")
    print("| probe | overrides | teacher top-1 | cifar-resnet20 top-1 | mean class FD (r20) | roughness | seconds |")
    print("|---|---|---|---|---|---|---|")
    for probe in args.probes:
        name, _, text = probe.partition(":")
        overrides = {"iterations": args.iterations, **(json.loads(text) if text else {})}
        start = time.perf_counter()
        r = synthesize(args.bundle, teacher, classes=CLASSES, per_class=args.per_class, config=SynthConfig.cifar(**overrides))
        x = r.images()
        out = run_model(judge, TensorDataset(r.uint8, r.labels), features=True)
        fd = per_class_frechet(out.features, out.labels, ref.features, ref.labels, num_classes=ref.logits.shape[1])
        mean_fd = sum(fd[k] for k in CLASSES) / len(CLASSES)
        print(
            f"| {name} | `{json.dumps(overrides)}` | {r.teacher_accuracy:.0%} | {top1_accuracy(out.logits, out.labels):.0%} "
            f"| {mean_fd:.2f} | {roughness(x):.3f} | {time.perf_counter() - start:.0f} |",
            flush=True,
        )
        if args.grids is not None:
            from torchvision.utils import save_image

            args.grids.mkdir(parents=True, exist_ok=True)
            save_image(x, args.grids / f"{name}.png", nrow=args.per_class)


if __name__ == "__main__":
    main()
