"""Train cifar-vgg from scratch on the CIFAR-10 JPEGs: an independent judge of synthesized images.

A judge must not share the teacher's family or weights (the ResNets), so quality numbers do not
reward images that only fool the teacher. Run (about 45 min on 2 CPU cores):
``python studies/train_judge.py`` (data from ``$SOWMETA_SHARED``, weights to ``runs/judges/cifar-vgg.safetensors``),
then ``load_model("cifar-vgg", weights="runs/judges/cifar-vgg.safetensors")``.
The last line is ``RESULT judge=cifar-vgg test_jpeg_top1=<x> test_lossless_top1=<y> seconds=<s>``.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from sowmeta.env import shared_dir
from sowmeta.models import CIFAR10_LABELS, LoadedModel, load_model

ARCH = "cifar-vgg"


def decode_zip(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``<split>/<class>/<n>.jpg`` images of a zip as uint8 N x 3 x 32 x 32 and int64 labels.

    Class indices follow the alphabetical folder order, which is the CIFAR-10 order.
    """
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(f"{split}/") and n.lower().endswith(".jpg"))
        classes = sorted({n.split("/")[1] for n in names})
        if tuple(classes) != CIFAR10_LABELS:
            raise SystemExit(f"{path}: class folders {classes} are not the CIFAR-10 classes {list(CIFAR10_LABELS)}")
        index = {c: i for i, c in enumerate(classes)}
        x = np.empty((len(names), 32, 32, 3), dtype=np.uint8)
        y = np.empty(len(names), dtype=np.int64)
        for i, name in enumerate(names):
            with Image.open(io.BytesIO(zf.read(name))) as im:
                x[i] = np.asarray(im.convert("RGB"))
            y[i] = index[name.split("/")[1]]
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the 4-pixel zero-padded batch and a random horizontal flip, per image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    oy = torch.randint(0, 9, (n, 1), generator=gen) + torch.arange(h)
    ox = torch.randint(0, 9, (n, 1), generator=gen) + torch.arange(w)
    flip = torch.rand(n, generator=gen) < 0.5
    ox = torch.where(flip[:, None], ox.flip(1), ox)
    b = torch.arange(n)[:, None, None, None]
    ch = torch.arange(c)[None, :, None, None]
    return padded[b, ch, oy[:, None, :, None], ox[:, None, None, :]]


class Normalize:
    """uint8 images to the model's input: [0, 1], then (x - mean) / std."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.mean = torch.tensor(loaded.preprocessing.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(loaded.preprocessing.std).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255 - self.mean) / self.std


@torch.no_grad()
def top1(model: nn.Module, norm: Normalize, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` in eval mode on uint8 images ``x``."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(norm(x[i : i + batch_size])).argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / len(x)


def save_atomic(state: dict[str, torch.Tensor], out: Path, metadata: dict[str, str]) -> None:
    """``save_file`` to a temp file beside ``out``, then rename it over ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=shared_dir(), help="the shared data folder (SOWMETA_SHARED)")
    ap.add_argument("--out", type=Path, default=Path("runs/judges/cifar-vgg.safetensors"), help="safetensors file to write")
    ap.add_argument("--epochs", type=int, default=20, help="about 2 min each on 2 CPU cores")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)

    data = args.shared / "data" / "cifar10"
    x_train, y_train = decode_zip(data / "train.zip", "train")
    x_test, y_test = decode_zip(data / "test.zip", "test")
    with np.load(data / "test-lossless-head.npz") as npz:
        x_ll, y_ll = torch.from_numpy(npz["x"]), torch.from_numpy(npz["y"]).long()
    print(f"decoded {len(x_train)} train, {len(x_test)} test JPEGs, {len(x_ll)} lossless in {time.perf_counter() - start:.0f} s", flush=True)

    loaded = load_model(ARCH, weights=None)
    model = loaded.module.train()
    norm = Normalize(loaded)
    steps = len(x_train) // args.batch_size  # drop the last partial batch: BatchNorm dislikes tiny ones
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps, pct_start=0.25, cycle_momentum=False
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(len(x_train), generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(steps):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            x = norm(augment(x_train[idx], gen))
            y = y_train[idx]
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
        seen = steps * args.batch_size
        ll = top1(model, norm, x_ll, y_ll)
        print(
            f"epoch {epoch}/{args.epochs} loss {loss_sum / seen:.4f} train_acc {correct / seen:.4f} "
            f"lossless_top1 {ll:.4f} seconds {time.perf_counter() - t0:.1f}",
            flush=True,
        )

    model.eval()
    acc_jpeg = top1(model, norm, x_test, y_test)
    acc_ll = top1(model, norm, x_ll, y_ll)
    meta = {
        "arch": ARCH,
        "epochs": str(args.epochs),
        "seed": str(args.seed),
        "test_jpeg_top1": f"{acc_jpeg:.4f}",
        "test_lossless_top1": f"{acc_ll:.4f}",
    }
    save_atomic(model.state_dict(), args.out, meta)

    # The file must rebuild the same judge through the library's own loader.
    back = load_model(ARCH, weights=str(args.out))
    check = (top1(back.module, Normalize(back), x_test, y_test), top1(back.module, Normalize(back), x_ll, y_ll))
    if check != (acc_jpeg, acc_ll):
        raise SystemExit(f"{args.out} loads back with top-1 {check}, not {(acc_jpeg, acc_ll)}")
    print(f"wrote {args.out}; load_model({ARCH!r}) gives the same top-1", flush=True)
    print(
        f"RESULT judge={ARCH} test_jpeg_top1={acc_jpeg:.4f} test_lossless_top1={acc_ll:.4f} "
        f"seconds={time.perf_counter() - start:.0f}"
    )


if __name__ == "__main__":
    main()
