"""How much of a class's variance lies inside each image rather than between images, for synthesized sets against real ones.

Run: python studies/image_spread.py SET [SET ...] --real FOLDER [--model cifar-resnet56 --weights FILE]

Each SET is a synthesis file (HDF5) or a folder of class folders. Per set, the share of each
class's variance that is within the images (mean of the per-image variances over the class's
variance, averaged over classes and channels) at the pixels and at the model's first, middle and
last tap; then the images' own contrast (pixel std inside each image, 0-255) and colourfulness
(max - min channel, 0-255). Matching only pooled statistics lets every image take the whole class
variance: shares near 1, with too much contrast in each image and one tone for all of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sowmeta import load_model
from sowmeta.env import shared_dir
from sowmeta.data.image_sets import load_images
from sowmeta.models.taps import resolve_taps, tap_hooks


def within_share(f: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over classes and channels of (mean per-image variance) / (class variance), features [N, C, ...] in float64."""
    f = f.double().reshape(f.shape[0], f.shape[1], -1)
    shares = []
    for c in y.unique():
        fc = f[y == c]
        within = fc.var(dim=2, correction=0).mean(dim=0)
        total = fc.transpose(0, 1).reshape(f.shape[1], -1).var(dim=1, correction=0)
        shares.append(within / total.clamp_min(1e-12))
    return float(torch.stack(shares).mean())


def spread(path: Path, model: object, taps: list) -> dict[str, float]:
    """The within-image shares at the pixels and the chosen taps, and per-image contrast and colourfulness."""
    x, y = load_images(path)
    pixels = x.float()
    p = model.preprocessing  # type: ignore[attr-defined]
    inp = (pixels / 255 - torch.tensor(p.mean).view(1, 3, 1, 1)) / torch.tensor(p.std).view(1, 3, 1, 1)
    feats: dict[str, torch.Tensor] = {}
    with torch.no_grad(), tap_hooks(model.module.eval(), taps, lambda t, f: feats.__setitem__(t.name, f.detach())):  # type: ignore[attr-defined]
        model.module(inp)  # type: ignore[attr-defined]
    out = {"pixels": within_share(pixels, y)}
    out |= {t.name: within_share(feats[t.name], y) for t in taps}
    out["contrast"] = float(pixels.std(dim=(1, 2, 3)).mean())
    out["colour"] = float((pixels.max(dim=1).values - pixels.min(dim=1).values).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("--real", type=Path, required=True, help="a folder of real images, printed first")
    ap.add_argument("--model", default="cifar-resnet56")
    ap.add_argument("--weights", type=Path, help="default: ../shared/models/cifar10/resnet56.safetensors")
    args = ap.parse_args()
    weights = args.weights or shared_dir() / "models" / "cifar10" / "resnet56.safetensors"
    model = load_model(args.model, weights=weights)
    every = resolve_taps(model.module, "auto")
    taps = [every[0], every[len(every) // 2], every[-1]]
    print("| set | images | within-image share: pixels | " + " | ".join(t.name for t in taps) + " | contrast | colour |")
    print("|---|---|---|" + "---|" * len(taps) + "---|---|")
    for path in [args.real, *args.sets]:
        s = spread(path, model, taps)
        shares = " | ".join(f"{s[t.name]:.2f}" for t in taps)
        print(f"| {path} | {len(load_images(path)[1])} | {s['pixels']:.2f} | {shares} | {s['contrast']:.1f} | {s['colour']:.1f} |")


if __name__ == "__main__":
    main()
