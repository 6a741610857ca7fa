"""ImageNet synthesis speed on this machine: seconds per iteration at 224 px, float32 against bf16 autocast,
NCHW against channels-last, two threads against one.

Run: ``python benchmarks/imagenet_speed.py [--shared ../shared] [--batch 8] [--rounds 3]``. It collects a
Scenario C bundle of ``--batch`` classes from the ImageNet sample photographs (seconds), then times the
full synthesis step (``sowmeta.synthesize``, the imagenet preset, classes mixed in one batch) for each
variant. A variant's time per iteration (wall, and this process's CPU time: on a shared machine the CPU
time says what the work costs, the wall time what a user waits) is (time of 2 + N iterations - time of 2) / N, so set-up and
the final verdict pass cancel; the variants run interleaved in rounds and the medians are compared,
so the ratios hold on a busy machine. The last line is ``RESULT`` with each variant's s/iteration and
its ratio to float32 NCHW at ``--threads``. On a machine shared with other work, two threads per process can be
several times slower than one (OpenMP threads wait on each other): compare fp32-1thread with fp32-2threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sowmeta  # noqa: E402
from sowmeta import SynthConfig, collect_seeds, synthesize  # noqa: E402

VARIANTS = {  # name -> (amp, channels_last, threads or None for the machine's)
    "fp32": ("none", False, None),
    "fp32-cl": ("none", True, None),
    "bf16": ("bf16", False, None),
    "bf16-cl": ("bf16", True, None),
    "fp32-1thread": ("none", False, 1),
    "fp32-2threads": ("none", False, 2),
}


def seeds_folder(shared: Path, classes: int, into: Path) -> Path:
    """Links to the first ``classes`` classes' photographs the teacher recognises, as a <index>/<file> folder."""
    sample = shared / "data/imagenet-sample"
    for k, wnid in enumerate(sorted(os.listdir(sample))[: classes * 2]):
        photo = sorted((sample / wnid).iterdir())[0]
        (into / str(k)).mkdir(parents=True)
        (into / str(k) / photo.name).symlink_to(photo)
    return into


def timed(bundle: sowmeta.Bundle, model: sowmeta.LoadedModel, classes: list[int], iterations: int, variant: str) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of a synthesis of ``iterations`` iterations."""
    amp, cl, threads = VARIANTS[variant]
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    config = SynthConfig.preset("imagenet", iterations=iterations, batch_size=len(classes), mixed=True, amp=amp, channels_last=cl,
                                check_fingerprint=False)
    t, c = time.perf_counter(), time.process_time()
    synthesize(bundle, model, classes=classes, per_class=1, config=config)
    torch.set_num_threads(before)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--batch", type=int, default=8, help="classes, one image each, optimized together")
    ap.add_argument("--iterations", type=int, default=10, help="N: iterations timed beyond the first 2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads for the variants that do not set theirs (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    weights = a.shared / "models/imagenet/efficientnet-lite0.safetensors"
    if not weights.exists():
        sys.exit(f"error: {weights} not found; pass --shared DIR (the folder holding models/imagenet and data/imagenet-sample)")
    model = sowmeta.load_model("timm:tf_efficientnet_lite0", weights=str(weights))
    print(f"cpu: {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}, native bf16 "
          f"{torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()}, load {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        bundle, report = collect_seeds(model, seeds_folder(a.shared, a.batch, Path(tmp) / "seeds"), out=Path(tmp) / "b")
        classes = [c for c in bundle.classes if int(bundle.counts[bundle.row(c)]) > 0][: a.batch]
        variants = a.variants.split(",")
        wall: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(a.rounds):
            for v in variants:
                short, long = timed(bundle, model, classes, 2, v), timed(bundle, model, classes, 2 + a.iterations, v)
                wall[v].append((long[0] - short[0]) / a.iterations)
                cpu[v].append((long[1] - short[1]) / a.iterations)
                print(f"round {r} {v:13s} wall {wall[v][-1]:.3f} s/iteration, CPU {cpu[v][-1]:.3f} s/iteration", flush=True)
    base = statistics.median(wall[variants[0]])
    cells = []
    for v in variants:
        m, c = statistics.median(wall[v]), statistics.median(cpu[v])
        print(f"{v:13s} median wall {m:.3f} s/iteration ({m / len(classes):.3f} s per image-iteration), {m / base:.2f}x {variants[0]}, "
              f"spread {min(wall[v]):.3f}-{max(wall[v]):.3f}; CPU {c:.3f} s/iteration")
        cells.append(f"{v}={m:.3f}s/{m / base:.2f}x")
    print(f"load {os.getloadavg()[0]:.1f}")
    print("RESULT batch=%d %s" % (len(classes), " ".join(cells)))


if __name__ == "__main__":
    main()
