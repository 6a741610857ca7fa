"""Two cheap ways to undo JPEG compression, probed before any synthesis: deblock the images, or correct the statistics.

Run: python studies/jpeg_undo.py [--threads 2]

On the 846 lossless CIFAR-10 test images of ../shared and their JPEG copy (quality 75, 4:2:0, as
../shared's):
1. Deblocking: the JPEGs pushed toward a smooth image (total variation) while every DCT
   coefficient stays inside its quantization interval (projection onto the constraint set, as in
   POCS deblocking). Prints top-1 of cifar-resnet20 and -56 and the PSNR to the lossless images.
2. Self-estimated statistics correction: the shift that one more JPEG pass (quality 75, 4:2:0, on
   a grid moved by 4 px, so that it is a fresh compression) makes in cifar-resnet56's per-class
   statistics, extrapolated backwards: s_J - alpha (s_JJ - s_J) as an estimate of the lossless s_L.
   Prints the residual |corrected - s_L| / |s_J - s_L| over all taps, classes and channels (means
   in units of the lossless global std; variances as logs), at alpha = 1 and at the best alpha.
Both need nothing but the JPEGs; results in studies/cifar10-log.md, 7.7.
"""

from __future__ import annotations

import argparse
import functools
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from jpeg_cost import top1
from sowmeta import collect, load_model
from sowmeta.env import shared_dir
from sowmeta.synth.jpeg_view import _codec, dct_blocks, idct_blocks

QUALITY = 75


def encode(images: np.ndarray, shift: int = 0) -> np.ndarray:
    """N x 3 x H x W uint8 through JPEG quality 75, 4:2:0; with ``shift`` the 8x8 grid starts ``shift`` px earlier."""
    out = []
    for pixels in images:
        a = pixels.transpose(1, 2, 0)
        if shift:
            a = np.pad(a, ((shift, 0), (shift, 0), (0, 0)), mode="edge")
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=QUALITY, subsampling=2)
        out.append(np.asarray(Image.open(buf).convert("RGB"))[shift:, shift:].transpose(2, 0, 1))
    return np.stack(out)


def deblock(jpegs: np.ndarray, steps: int, step_size: float) -> np.ndarray:
    """Total-variation descent, each step projected back onto the JPEG's quantization intervals (luma and 4:2:0 chroma)."""
    dct, luma_q, chroma_q, to_ycc, from_ycc = _codec(QUALITY, "cpu", torch.float64)
    blocks, unblocks = functools.partial(dct_blocks, d=dct), functools.partial(idct_blocks, d=dct)

    x = torch.from_numpy(jpegs).double()
    ycc = torch.einsum("oc,bchw->bohw", to_ycc, x)
    k_y = torch.round(blocks(ycc[:, :1] - 128) / luma_q)
    k_c = torch.round(blocks(F.avg_pool2d(ycc[:, 1:], 2)) / chroma_q)

    def project(img: torch.Tensor) -> torch.Tensor:
        ycc = torch.einsum("oc,bchw->bohw", to_ycc, img)
        y = unblocks(torch.clamp(blocks(ycc[:, :1] - 128), (k_y - 0.5) * luma_q, (k_y + 0.5) * luma_q)) + 128
        chroma = ycc[:, 1:]
        low = F.avg_pool2d(chroma, 2)
        fixed = unblocks(torch.clamp(blocks(low), (k_c - 0.5) * chroma_q, (k_c + 0.5) * chroma_q))
        chroma = chroma + F.interpolate(fixed - low, scale_factor=2, mode="nearest")  # the least change whose 2x2 means are fixed
        return torch.einsum("oc,bchw->bohw", from_ycc, torch.cat([y, chroma], 1)).clamp(0, 255)

    for _ in range(steps):
        x.requires_grad_(True)
        dx, dy = x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]
        tv = (dx**2 + 1).sqrt().sum() + (dy**2 + 1).sqrt().sum()
        (grad,) = torch.autograd.grad(tv, x)
        x = project(x.detach() - step_size * grad)
    return x.round().to(torch.uint8).numpy()


def psnr(images: np.ndarray, truth: np.ndarray) -> float:
    return 10 * math.log10(255**2 / float(((images.astype(np.float64) - truth) ** 2).mean()))


def statistics(model: object, images: np.ndarray, labels: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    x = model.preprocessing.normalize(torch.from_numpy(images).float() / 255)  # type: ignore[attr-defined]
    bundle, _ = collect(model, DataLoader(TensorDataset(x, labels), batch_size=128))  # type: ignore[arg-type]
    return {name: (s.mean.double(), s.var.double(), s.global_var.double()) for name, s in bundle.stats.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", default=str(shared_dir() / "data" / "cifar10" / "test-lossless-head.npz"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = shared_dir() / "models" / "cifar10"
    arrays = np.load(args.npz)
    lossless, labels = arrays["x"], torch.from_numpy(arrays["y"])
    nets = {n: load_model(f"cifar-{n}", weights=str(models / f"{n}.safetensors")) for n in ("resnet20", "resnet56")}
    for net in nets.values():
        net.module.eval()
    jpegs = encode(lossless)

    print("| images | " + " | ".join(f"cifar-{n} top-1" for n in nets) + " | PSNR to lossless |")
    print("|---|" + "---|" * (len(nets) + 1))
    rows = [("lossless", lossless), ("JPEG q75 4:2:0", jpegs)]
    rows += [(f"JPEG deblocked, {steps} TV steps of {size}", deblock(jpegs, steps, size)) for steps, size in ((50, 0.5), (100, 1.0))]
    for name, images in rows:
        cells = " | ".join(f"{100 * top1(net, images, labels):.1f} %" for net in nets.values())
        print(f"| {name} | {cells} | {'–' if images is lossless else f'{psnr(images, lossless):.2f} dB'} |")

    teacher = nets["resnet56"]
    s_l, s_j, s_jj = (statistics(teacher, images, labels) for images in (lossless, jpegs, encode(jpegs, shift=4)))
    print("\n| statistic | residual at alpha 1 | best alpha | residual at best alpha |")
    print("|---|---|---|---|")
    for kind in ("mean", "log variance"):
        true_shift, estimate = [], []
        for name in s_l:
            (ml, vl, gl), (mj, vj, _), (mjj, vjj, _) = s_l[name], s_j[name], s_jj[name]
            if kind == "mean":
                sd = gl.sqrt().clamp_min(1e-6)
                true_shift.append(((mj - ml) / sd).flatten())
                estimate.append(((mjj - mj) / sd).flatten())
            else:
                log = lambda v: v.clamp_min(1e-12).log()  # noqa: E731
                true_shift.append((log(vj) - log(vl)).flatten())
                estimate.append((log(vjj) - log(vj)).flatten())
        t, e = torch.cat(true_shift), torch.cat(estimate)
        best = float(t @ e / (e @ e))
        residual = lambda a: float((t - a * e).norm() / t.norm())  # noqa: E731
        print(f"| {kind} | {residual(1.0):.3f} | {best:.2f} | {residual(best):.3f} |")
        print(f"RESULT {kind.replace(' ', '_')}_residual_alpha1={residual(1.0):.3f} best_alpha={best:.2f} residual_best={residual(best):.3f}")


if __name__ == "__main__":
    main()
