"""Collection overhead: throughput of `collect` divided by plain inference throughput.

Same model, same batches, data already in memory; the two are timed alternately, batch by
batch, so that both see the same machine state, and the medians are compared.

Run: python benchmarks/collect_overhead.py            (CPU: cifar-resnet56 @ 32 px, resnet18 @ 224 px)
     python benchmarks/collect_overhead.py --device cuda
The last line is machine-readable: `RESULT collect_ratio_cifar=<x> collect_ratio_r18=<y>`
(1.0 = collection costs nothing over inference; the goal is >= 0.95).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from sowmeta.collectors import StatsRecorder
from sowmeta.taps import resolve_taps
from sowmeta.models import load_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(module: nn.Module, batches: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int, rounds: int, device: torch.device) -> tuple[float, float, int]:
    """Median seconds per batch of plain inference and of inference + statistics, and the tap count."""
    module = module.to(device).eval()
    taps = resolve_taps(module)
    recorder = StatsRecorder(module, taps, num_classes)

    def plain(x: torch.Tensor, _y: torch.Tensor) -> None:
        module(x)

    def collect(x: torch.Tensor, y: torch.Tensor) -> None:
        with recorder.hooks():
            recorder.set_labels(y)
            module(x)
        recorder.set_labels(None)

    times: dict[str, list[float]] = {"plain": [], "collect": []}
    with torch.no_grad():
        for fn in (plain, collect):  # warm-up: allocator, kernels, moments buffers
            fn(batches[0], labels[0])
        for r in range(rounds):
            for x, y in zip(batches, labels):
                order = (plain, collect) if r % 2 == 0 else (collect, plain)
                for fn in order:
                    _sync(device)
                    t = time.perf_counter()
                    fn(x, y)
                    _sync(device)
                    times["plain" if fn is plain else "collect"].append(time.perf_counter() - t)
    return statistics.median(times["plain"]), statistics.median(times["collect"]), len(taps)


def case(name: str, model: str, size: int, batch: int, n_batches: int, rounds: int, device: torch.device) -> float:
    loaded = load_model(model, weights="none")
    k = loaded.num_classes
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(batch, 3, size, size, generator=g).to(device) for _ in range(n_batches)]
    labels = [torch.randint(0, k, (batch,), generator=g).to(device) for _ in range(n_batches)]
    t_plain, t_collect, taps = measure(loaded.module, batches, labels, k, rounds, device)
    ratio = t_plain / t_collect
    print(
        f"{name:<16} {model} @ {size} px, batch {batch}, {taps} taps, {k} classes: "
        f"inference {batch / t_plain:8.1f} img/s, collect {batch / t_collect:8.1f} img/s, ratio {ratio:.3f}"
    )
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=4, help="passes over the batches (alternating which variant runs first)")
    ap.add_argument("--cifar-batch", type=int, default=256)
    ap.add_argument("--r18-batch", type=int, default=32)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}")
    big = device.type == "cuda"
    cifar = case("cifar", "cifar-resnet56", 32, args.cifar_batch * (4 if big else 1), 4, args.rounds, device)
    r18 = case("r18", "resnet18", 224, args.r18_batch * (8 if big else 1), 3, args.rounds, device)
    print(f"RESULT collect_ratio_cifar={cifar:.3f} collect_ratio_r18={r18:.3f}")


if __name__ == "__main__":
    main()
