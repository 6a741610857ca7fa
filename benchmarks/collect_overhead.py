"""Collection overhead: throughput of `collect` divided by plain inference throughput.

In memory: same model, same batches, data already in memory; the two are timed alternately,
batch by batch, so that both see the same machine state, and the medians are compared.

End to end (when the CIFAR-10 JPEG folder is there: `python -m zipfile -e
../shared/data/cifar10/train.zip data/cifar10`): `sowmeta.collect` over the first
`--jpeg-per-class` images of each class folder, against plain inference fed by the same loader
(`sowmeta.data.folder_loader`, sized by `plan_loader` for this machine), whole passes
alternated; and the loader alone (decoding only). Its collect rate is also compared with the
in-memory collect rate of the same model and batch size.

Run: python benchmarks/collect_overhead.py            (CPU: cifar-resnet56 @ 32 px, resnet18 @ 224 px, CIFAR JPEGs)
     python benchmarks/collect_overhead.py --timm efficientnet_b0   (also a timm model, whose BatchNormAct2d layers the kernel takes)
     python benchmarks/collect_overhead.py --device cuda
The last line is machine-readable: `RESULT collect_ratio_cifar=<x> collect_ratio_r18=<y>
collect_ratio_jpeg=<collect / plain, both from JPEGs> jpeg_over_memory=<collect from JPEGs / collect in memory>`
(and `collect_ratio_timm=` with --timm)
(1.0 = collection costs nothing over inference; the goal is >= 0.95). The line before it gives what the
fused BatchNorm kernel gains per in-memory case: `kernel_gain_<case>=<collect by hooks alone / collect, in time>`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from sowmeta.moments import fused_batchnorms
from sowmeta.collectors import StatsRecorder, collect
from sowmeta.data.folders import folder_loader, plan_loader, scan_image_folder
from sowmeta.models import load_model
from sowmeta.models.taps import resolve_taps, tap_hooks

CIFAR_JPEGS = Path(__file__).resolve().parent.parent / "data" / "cifar10" / "train"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(module: nn.Module, batches: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int, rounds: int,
            device: torch.device) -> tuple[float, float, float, float, int]:
    """Median seconds per batch of plain inference, of inference + statistics, of inference with the
    BatchNorm layers through sowmeta's fused kernel (moments thrown away), and of inference + statistics
    recorded by hooks alone (no kernel); and the tap count."""
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

    def kernel(x: torch.Tensor, _y: torch.Tensor) -> None:
        with fused_batchnorms(module, taps, lambda *_: None, contract="central"):
            module(x)

    def hooked(x: torch.Tensor, y: torch.Tensor) -> None:
        with tap_hooks(module, recorder.taps, lambda tap, x: recorder._record(tap, x, None)):  # the recorder's own callback, without the kernel
            recorder.set_labels(y)
            module(x)
        recorder.set_labels(None)

    variants = {"plain": plain, "collect": collect, "kernel": kernel, "hooks": hooked}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for fn in variants.values():  # warm-up: allocator, kernels, moments buffers
            fn(batches[0], labels[0])
        for r in range(rounds):
            for x, y in zip(batches, labels):
                for name, fn in variants.items() if r % 2 == 0 else reversed(variants.items()):
                    _sync(device)
                    t = time.perf_counter()
                    fn(x, y)
                    _sync(device)
                    times[name].append(time.perf_counter() - t)
    medians = [statistics.median(times[name]) for name in variants]
    return medians[0], medians[1], medians[2], medians[3], len(taps)


def case(name: str, model: str, size: int, batch: int, n_batches: int, rounds: int, device: torch.device) -> tuple[float, float, float]:
    """The in-memory case: collect / plain inference throughput, collect's images/s, and the kernel's gain
    (collect by hooks alone over collect, in time per batch)."""
    loaded = load_model(model, weights="none")
    k = loaded.num_classes
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(batch, 3, size, size, generator=g).to(device) for _ in range(n_batches)]
    labels = [torch.randint(0, k, (batch,), generator=g).to(device) for _ in range(n_batches)]
    t_plain, t_collect, t_kernel, t_hooks, taps = measure(loaded.module, batches, labels, k, rounds, device)
    ratio = t_plain / t_collect
    print(
        f"{name:<16} {model} @ {size} px, batch {batch}, {taps} taps, {k} classes: "
        f"inference {batch / t_plain:8.1f} img/s, collect {batch / t_collect:8.1f} img/s, ratio {ratio:.3f}; "
        f"inference with the fused BatchNorm {batch / t_kernel:8.1f} img/s, collect / that {t_kernel / t_collect:.3f}; "
        f"collect by hooks alone {batch / t_hooks:8.1f} img/s, ratio {t_plain / t_hooks:.3f}"
    )
    return ratio, batch / t_collect, t_hooks / t_collect


def jpeg_case(folder: Path, per_class: int, batch: int | None, workers: int | None, rounds: int, device: torch.device) -> tuple[float, float, int]:
    """Images/s of ``collect`` and of plain inference over the same JPEGs with the same loader; and the batch size used."""
    loaded = load_model("cifar-resnet56", weights="none")
    module = loaded.module.to(device).eval()
    samples = scan_image_folder(folder).limit(per_class).samples
    plan = plan_loader(loaded.preprocessing.crop, device, batch_size=batch, workers=workers)

    def plain() -> None:
        with torch.no_grad():
            for x, _y, _bad in folder_loader(samples, loaded.preprocessing, plan):
                module(x.to(device, non_blocking=True))
        _sync(device)

    def collected() -> None:
        collect(loaded, folder, limit_per_class=per_class, batch_size=plan.batch_size, workers=plan.workers, device=device)
        _sync(device)

    def decode_only() -> None:
        for _ in folder_loader(samples, loaded.preprocessing, plan):
            pass

    times: dict[str, list[float]] = {"plain": [], "collect": [], "decode": []}
    for r in range(rounds + 1):  # round 0 warms up (page cache, kernels) and is not counted
        order = [("plain", plain), ("collect", collected), ("decode", decode_only)]
        for name, fn in order if r % 2 == 0 else reversed(order):
            t = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t)
    n = len(samples)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    print(
        f"{'jpeg':<16} cifar-resnet56 from {n} CIFAR-10 JPEGs, batch {plan.batch_size}, {plan.workers} workers: "
        f"decoding alone {rate['decode']:8.1f} img/s, inference {rate['plain']:8.1f} img/s, collect {rate['collect']:8.1f} img/s, "
        f"ratio {rate['collect'] / rate['plain']:.3f}"
    )
    return rate["collect"], rate["plain"], plan.batch_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=4, help="passes over the batches (alternating which variant runs first)")
    ap.add_argument("--cifar-batch", type=int, default=256)
    ap.add_argument("--r18-batch", type=int, default=32)
    ap.add_argument("--jpegs", type=Path, default=CIFAR_JPEGS, help="a class-per-folder JPEG dataset (CIFAR-10 train)")
    ap.add_argument("--jpeg-per-class", type=int, default=500, help="images per class in the end-to-end case")
    ap.add_argument("--jpeg-rounds", type=int, default=2)
    ap.add_argument("--jpeg-batch", type=int, default=None, help="default: plan_loader's choice")
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (default: plan_loader's choice)")
    ap.add_argument("--timm", help="also a timm model at 224 px, batch --r18-batch (e.g. efficientnet_b0: BatchNormAct2d layers)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}")
    big = device.type == "cuda"
    cifar_batch = args.cifar_batch * (4 if big else 1)
    cifar, cifar_rate, cifar_gain = case("cifar", "cifar-resnet56", 32, cifar_batch, 4, args.rounds, device)
    r18, _, r18_gain = case("r18", "resnet18", 224, args.r18_batch * (8 if big else 1), 3, args.rounds, device)
    result = f"RESULT collect_ratio_cifar={cifar:.3f} collect_ratio_r18={r18:.3f}"
    gains = f"kernel_gain_cifar={cifar_gain:.3f} kernel_gain_r18={r18_gain:.3f}"
    if args.timm:
        timm_ratio, _, timm_gain = case("timm", f"timm:{args.timm}", 224, args.r18_batch * (8 if big else 1), 3, args.rounds, device)
        result += f" collect_ratio_timm={timm_ratio:.3f}"
        gains += f" kernel_gain_timm={timm_gain:.3f}"
    if args.jpegs.is_dir():
        jpeg_collect, jpeg_plain, batch = jpeg_case(args.jpegs, args.jpeg_per_class, args.jpeg_batch, args.workers, args.jpeg_rounds, device)
        memory_collect = cifar_rate if batch == cifar_batch else case("cifar-memory", "cifar-resnet56", 32, batch, 4, args.rounds, device)[1]
        print(f"{'':<16} collect from JPEGs / collect in memory at batch {batch}: {jpeg_collect / memory_collect:.3f}")
        result += f" collect_ratio_jpeg={jpeg_collect / jpeg_plain:.3f} jpeg_over_memory={jpeg_collect / memory_collect:.3f}"
    else:
        print(f"(no end-to-end case: {args.jpegs} is missing; python -m zipfile -e ../shared/data/cifar10/train.zip data/cifar10)")
    print(gains)
    print(result)


if __name__ == "__main__":
    main()
