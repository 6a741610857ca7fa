"""Collection overhead: forward alone vs forward + sowmeta's statistics, vs a per-class Python loop.

Run: python benchmarks/collect_speed.py   (CPU; cifar-resnet20 at 32 px, 100 classes, batch 256)
Prints one line per variant, then `RESULT overhead_vs_forward=<x> speedup_vs_loop=<y>`.
"""

from __future__ import annotations

import argparse
import time

import torch

from sowmeta.collect import StatsRecorder, default_taps
from sowmeta.models import CifarResNet


def naive_update(store: dict, name: str, x: torch.Tensor, y: torch.Tensor, k: int) -> None:
    """A straightforward reference: a Python loop over the classes of the batch, Welford-merged in float64."""
    for cls in y.unique().tolist():
        f = x[y == cls].double().transpose(0, 1).reshape(x.shape[1], -1)
        v, m = torch.var_mean(f, dim=1, correction=0)
        n = f.shape[1]
        if (name, cls) not in store:
            store[(name, cls)] = (n, m, v * n)
            continue
        n0, m0, m2 = store[(name, cls)]
        d = m - m0
        tot = n0 + n
        store[(name, cls)] = (tot, m0 + d * n / tot, m2 + v * n + d.square() * n0 * n / tot)


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = CifarResNet(20, num_classes=args.classes).eval()
    x = torch.rand(args.batch, 3, 32, 32)
    y = torch.randint(0, args.classes, (args.batch,))
    taps = default_taps(model)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    recorder = StatsRecorder(model, taps, args.classes)

    def ours() -> None:
        with recorder.hooks(), torch.no_grad():
            recorder.set_labels(y)
            model(x)

    store: dict = {}
    from sowmeta.taps import tap_hooks

    def loop() -> None:
        with tap_hooks(model, taps, lambda t, f: naive_update(store, t.name, f.detach(), y, args.classes)), torch.no_grad():
            model(x)

    t_fwd = timed(forward, args.repeats)
    t_ours = timed(ours, args.repeats)
    t_loop = timed(loop, args.repeats)
    print(f"threads {torch.get_num_threads()}, cifar-resnet20, batch {args.batch}, {args.classes} classes, {len(taps)} taps")
    print(f"forward only            {t_fwd * 1e3:8.1f} ms")
    print(f"forward + sowmeta stats {t_ours * 1e3:8.1f} ms")
    print(f"forward + per-class loop{t_loop * 1e3:8.1f} ms")
    print(f"RESULT overhead_vs_forward={t_ours / t_fwd:.2f} speedup_vs_loop={t_loop / t_ours:.2f}")


if __name__ == "__main__":
    main()
