"""What JPEG re-encoding costs a CIFAR-10 network: top-1 on the 846 lossless test images of ../shared, re-encoded at each setting.

Run: python studies/jpeg_cost.py [--model cifar-resnet20=../shared/models/cifar10/resnet20.safetensors ...]

Prints one row per quality and chroma subsampling, one for the synthesis engine's differentiable
codec (``sowmeta.synth.jpeg_view``) at ../shared's setting, and ``RESULT`` lines with the lossless
top-1 and the cost of ../shared's own encoding (quality 75, 4:2:0). The thresholds of
``sowmeta.data.jpeg_quality`` come from this table (studies/cifar10-log.md, 7.5).
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import torch
from PIL import Image

from paired_judges import correct
from sowmeta import load_model
from sowmeta.env import shared_dir
from sowmeta.synth.jpeg_view import jpeg_view

SETTINGS = [(q, s) for q in (75, 85, 90, 95, 100) for s in (0, 2)]
NAMES = {0: "4:4:4", 2: "4:2:0"}


def reencode(images: np.ndarray, quality: int, subsampling: int) -> np.ndarray:
    """N x 3 x H x W uint8 images through one JPEG encode and decode each."""
    out = []
    for pixels in images:
        buf = io.BytesIO()
        Image.fromarray(pixels.transpose(1, 2, 0)).save(buf, "JPEG", quality=quality, subsampling=subsampling)
        out.append(np.asarray(Image.open(buf).convert("RGB")).transpose(2, 0, 1))
    return np.stack(out)


def top1(model: object, images: np.ndarray, labels: torch.Tensor) -> float:
    return float(correct(model, torch.from_numpy(images), labels).float().mean())


def main() -> None:
    models = shared_dir() / "models" / "cifar10"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="NAME=WEIGHTS; repeatable (default: cifar-resnet20 and -56 of ../shared)")
    ap.add_argument("--npz", default=str(shared_dir() / "data" / "cifar10" / "test-lossless-head.npz"))
    args = ap.parse_args()
    specs = args.model or [f"cifar-resnet20={models / 'resnet20.safetensors'}", f"cifar-resnet56={models / 'resnet56.safetensors'}"]
    arrays = np.load(args.npz)
    images, labels = arrays["x"], torch.from_numpy(arrays["y"])
    nets = {spec.partition("=")[0]: load_model(spec.partition("=")[0], weights=spec.partition("=")[2]) for spec in specs}
    for net in nets.values():
        net.module.eval()
    print("| encoding | " + " | ".join(nets) + " |")
    print("|---|" + "---|" * len(nets))
    lossless = {name: top1(net, images, labels) for name, net in nets.items()}
    print("| lossless | " + " | ".join(f"{100 * v:.1f} %" for v in lossless.values()) + " |")
    for quality, sub in SETTINGS:
        coded = reencode(images, quality, sub)
        scores = {name: top1(net, coded, labels) for name, net in nets.items()}
        print(f"| quality {quality}, {NAMES[sub]} | " + " | ".join(f"{100 * v:.1f} %" for v in scores.values()) + " |")
        if (quality, sub) == (75, 2):
            shared_cost = {name: lossless[name] - scores[name] for name in nets}
    with torch.no_grad():  # the synthesis engine's differentiable codec (--jpeg-quality 75) at ../shared's setting
        view = jpeg_view(torch.from_numpy(images).float() / 255, 75, "4:2:0").mul(255).round().to(torch.uint8).numpy()
    scores = {name: top1(net, view, labels) for name, net in nets.items()}
    print("| `jpeg_view`, quality 75, 4:2:0 | " + " | ".join(f"{100 * v:.1f} %" for v in scores.values()) + " |")
    for name in nets:
        print(f"RESULT {name}_lossless_top1={lossless[name]:.4f} {name}_q75_420_cost={shared_cost[name]:.4f}")


if __name__ == "__main__":
    main()
