"""Which term of the objective draws the preset's bright frame: a few variants on two classes, their border brightness.

Run: python studies/border_ablation.py --bundle BUNDLE --real FOLDER 'preset:{}' 'nocc:{"alpha_cc": 0}' ...

Every variant is NAME:JSON, overrides of ``SynthConfig.cifar()``. cifar-resnet56 synthesizes
``--per-class`` images of each of ``--classes`` (default cat and truck) in single-class batches of 8,
and ``edge_bias`` prints how much brighter than the image mean their corners and bands are,
after the same for the real images of those classes. Images are kept in memory only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from edge_bias import HEADER, row
from sowmeta import SynthConfig, load_model, synthesize
from sowmeta.env import shared_dir
from sowmeta.data.image_sets import load_images, read_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="NAME:JSON overrides of SynthConfig.cifar()")
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--real", type=Path, required=True, help="a folder of class folders of real images")
    ap.add_argument("--classes", default="cat,truck")
    ap.add_argument("--per-class", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    classes = args.classes.split(",")
    teacher = load_model("cifar-resnet56", weights=shared_dir() / "models" / "cifar10" / "resnet56.safetensors")
    print(HEADER)
    real, labels = load_images(args.real)
    folders = read_info(args.real).classes or []
    if missing := [c for c in classes if c not in folders]:
        raise SystemExit(f"{args.real} has no class folder {', '.join(missing)}; pass --classes from {', '.join(folders)}")
    wanted = torch.tensor([folders.index(c) for c in classes])
    print(row(f"real {args.classes}", real[torch.isin(labels, wanted)].float()), flush=True)
    for spec in args.variants:
        name, _, overrides = spec.partition(":")
        cfg = SynthConfig.cifar(iterations=args.iterations, batch_size=8, **json.loads(overrides or "{}"))
        result = synthesize(args.bundle, teacher, classes=classes, per_class=args.per_class, config=cfg)
        print(row(f"{name} `{overrides}`", result.uint8.float()), flush=True)


if __name__ == "__main__":
    main()
