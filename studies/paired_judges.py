"""Paired comparison of two image sets made from the same seeds and noise: which images each judge recognises in one set only.

Run: python studies/paired_judges.py A.h5 B.h5 [--judge cifar-resnet20 --judge cifar-vgg=WEIGHTS]

The sets must hold the same labels in the same order (the same plan: classes, images per class,
batch size, seed). For each judge it prints top-1 of both, the images right in A only and in B
only, and the exact two-sided p of those discordant counts (McNemar's exact test), as
studies/cifar10-log.md reports paired differences.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from fidelity_study import judge
from sowmeta.env import shared_dir
from sowmeta.data.image_sets import load_images


def correct(net: object, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    x = net.preprocessing.normalize(images.float() / 255)  # type: ignore[attr-defined]
    with torch.no_grad():
        return net.module.eval()(x).argmax(1) == labels  # type: ignore[attr-defined]


def exact_p(a: int, b: int) -> float:
    """Two-sided exact binomial p of a split a : b of the discordant pairs (1.0 when there are none)."""
    n = a + b
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(a, b) + 1)) / 2**n) if n else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--judge", action="append", help="NAME or NAME=WEIGHTS; repeatable (default: cifar-resnet20, cifar-vgg)")
    ap.add_argument("--models", type=Path, default=shared_dir() / "models" / "cifar10")
    args = ap.parse_args()
    (xa, ya), (xb, yb) = load_images(args.a), load_images(args.b)
    if not torch.equal(ya, yb):
        raise SystemExit(f"{args.a} and {args.b} do not hold the same labels in the same order; pair sets made by the same plan")
    for name in args.judge or ["cifar-resnet20", "cifar-vgg"]:
        net = judge(name, args.models)
        ra, rb = correct(net, xa, ya), correct(net, xb, yb)
        only_a, only_b = int((ra & ~rb).sum()), int((rb & ~ra).sum())
        print(f"{name.partition('=')[0]}: top-1 {ra.float().mean():.1%} / {rb.float().mean():.1%}; right only in A {only_a}, "
              f"only in B {only_b}; exact p = {exact_p(only_a, only_b):.3f}")


if __name__ == "__main__":
    main()
