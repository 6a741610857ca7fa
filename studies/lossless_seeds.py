"""Image folders from the 846 lossless CIFAR-10 test images in ../shared, for the compression study (studies/cifar10-log.md, 7.5).

Run: python studies/lossless_seeds.py --out runs/jpegstudy

Writes, under OUT, class-per-folder trees of the same images three ways:
  seeds-lossless/<class>/NNNN.png   every image, lossless
  seeds-jpeg/<class>/NNNN.jpg       every image re-encoded as ../shared's JPEG copy is (quality 75, 4:2:0)
  seeds-lossless-half/, ref-lossless/  the even- and odd-numbered images of each class (links into seeds-lossless):
                                    seeds for a bundle, and real images it never saw for the judges
NNNN numbers the images of a class in test-set order, as the JPEG copy's test/<class>/NNNN.jpg does.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

from sowmeta.env import shared_dir
from sowmeta.models import CIFAR10_LABELS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--npz", type=Path, default=shared_dir() / "data" / "cifar10" / "test-lossless-head.npz")
    args = ap.parse_args()
    if not args.npz.exists():
        raise SystemExit(f"{args.npz} does not exist: set SOWMETA_SHARED to the folder holding data/cifar10/")
    arrays = np.load(args.npz)
    count: dict[int, int] = {}  # images of each class so far
    for pixels, label in zip(arrays["x"], arrays["y"].tolist()):
        k = count.get(label, 0)
        count[label] = k + 1
        name = CIFAR10_LABELS[label]
        image = Image.fromarray(pixels.transpose(1, 2, 0))
        for tree, file in (("seeds-lossless", f"{k:04d}.png"), ("seeds-jpeg", f"{k:04d}.jpg")):
            folder = args.out / tree / name
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / file, **({"quality": 75, "subsampling": 2} if file.endswith(".jpg") else {}))
        half = args.out / ("seeds-lossless-half" if k % 2 == 0 else "ref-lossless") / name
        half.mkdir(parents=True, exist_ok=True)
        link = half / f"{k:04d}.png"
        if not link.is_symlink():
            os.symlink(Path("..", "..", "seeds-lossless", name, link.name), link)
    print(f"wrote {sum(count.values())} images of {len(count)} classes under {args.out}")


if __name__ == "__main__":
    main()
