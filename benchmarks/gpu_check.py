"""The GPU figures in one go: synthesis speed, engine overhead, DeepInversion speed-up, collection overhead, memory, bf16 agreement.

Run on one GPU: ``bash benchmarks/gpu_check.sh`` (about 5 minutes on an H100/H200; the budget
is 8). Offline: a random-init torchvision resnet50 and random class-conditional targets (the
speed does not depend on the weights). Every figure is one ``RESULT`` line:

* ``synth_seconds_per_image``: engine seconds per 224-px image at 2,000 iterations (bf16,
  channels_last, batch 128), from the steady-state time per iteration (``synth_speed.py``'s
  ``paired_loop``: the median iteration of batches of 2 x ``--iters`` iterations) times 2,000 / batch;
* ``synth_engine_over_bare``: that iteration against a bare forward + backward (goal <= 1.10);
* ``synth_speedup_vs_di_ref`` / ``synth_speedup_vs_di_frozen``: the DeepInversion-style loop of
  ``synth_speed.py`` (parameters trainable as in the public code / frozen) over the engine;
* ``collect_ratio_r50``: collect / plain inference, resnet50 224 px, batch 256, in memory;
* ``synth_peak_mib_per_image``: peak GPU memory of the engine's run over the batch size;
* ``bf16_vs_fp32_loss``: |loss(bf16) / loss(fp32) - 1| of the objective after 200 iterations
  from the same start and seed (``bf16_vs_fp32_same_images``: the same for one evaluation of
  the fp32 run's final images, which isolates the arithmetic from the trajectories);
* ``moments_max_rel_err``: the one-pass moments kernel on a bf16 channels-last map against float64.

``--device cpu --quick`` runs every step at toy sizes (the test suite does; AMP falls back to
float32 on the CPU, so the agreement figures are 0 there).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import collect_overhead  # noqa: E402
import synth_speed  # noqa: E402

from sowmeta.moments.reduce import mean_and_square  # noqa: E402
from sowmeta.models import load_model  # noqa: E402
from sowmeta.models.preprocess import Preprocessing  # noqa: E402
from sowmeta.synth import SynthConfig  # noqa: E402
from sowmeta.synth.engine import Inverter, TapTarget  # noqa: E402


def result(name: str, value: float, note: str = "") -> None:
    print(f"RESULT {name}={value:.4g}" + (f"   # {note}" if note else ""), flush=True)


def _inverter(module: torch.nn.Module, size: int, batch: int, amp: str, iterations: int, device: torch.device) -> Inverter:
    targets = [TapTarget(t.tap, t.mean.to(device), t.var.to(device), t.weight) for t in synth_speed._targets(module, 10)]
    cfg = SynthConfig(mode="cc", iterations=iterations, batch_size=batch, amp=amp, jitter=2, lr=0.1)
    return Inverter(module, targets, Preprocessing(crop=size), cfg, device)


def _objective(inverter: Inverter, terms: dict[str, float]) -> float:
    return sum(t.weight * terms[t.name] for t in inverter.terms)


def moments_error(device: torch.device, quick: bool) -> float:
    g = torch.Generator().manual_seed(0)
    shape = (4, 64, 14, 14) if quick else (128, 256, 56, 56)
    x = (torch.randn(shape, generator=g) * 2 + 1).to(device=device, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    view = x.permute(0, 2, 3, 1).flatten(1, 2)  # [N, H*W, C], as the engine reads a channels-last map
    mean, sq = mean_and_square(view, last=True, compiled=device.type == "cuda")
    ref = x.double().flatten(2)
    err_mean = ((mean.double() - ref.mean(2)).abs() / ref.abs().mean(2).clamp_min(1e-6)).max()
    err_sq = ((sq.double() - ref.square().mean(2)).abs() / ref.square().mean(2)).max()
    return float(torch.maximum(err_mean, err_sq))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="toy sizes (CPU test of the script)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=100, help="iterations per timed loop (the engine runs batches of twice this, a bare step after each iteration)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    device = torch.device(args.device)
    quick = args.quick
    size, batch, iters, rounds = (64, 4, 3, 1) if quick else (224, args.batch, args.iters, args.rounds)
    agree_iters = 5 if quick else 200
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; resnet50 {size} px, batch {batch}, {iters} iterations x {rounds} rounds", flush=True)
    start = time.perf_counter()

    result("moments_max_rel_err", moments_error(device, quick), "one-pass kernel, bf16 channels-last map vs float64")

    case = synth_speed.Case("resnet50", size, batch, "bf16")
    bare, eng, di, di_frozen, _ = synth_speed.run_case(case, device, iters, rounds)
    print(f"per iteration: bare {bare * 1e3:.2f} ms, engine {eng * 1e3:.2f} ms, DI ref {di * 1e3:.2f} ms, DI frozen {di_frozen * 1e3:.2f} ms", flush=True)
    result("synth_seconds_per_image", eng * 2000 / batch, f"2,000 iterations, batch {batch}, bf16, channels_last")
    result("synth_engine_over_bare", eng / bare, "goal <= 1.10")
    result("synth_speedup_vs_di_ref", di / eng)
    result("synth_speedup_vs_di_frozen", di_frozen / eng)

    module = load_model("resnet50", weights="none").module.to(device).eval()
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    x0 = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    y = torch.arange(batch, device=device) % 10
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    _inverter(module, size, batch, "bf16", iters, device).run(y, y.clone(), x0, seed=0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    result("synth_peak_mib_per_image", peak / 2**20 / batch, "0 on the CPU (not measured)")

    finals = {}
    for amp in ("bf16", "none"):
        inverter = _inverter(module, size, batch, amp, agree_iters, device)
        out = inverter.run(y, y.clone(), x0, seed=0)
        finals[amp] = (_objective(inverter, out.terms), out.images)
    same = {}
    for amp in ("bf16", "none"):  # one evaluation of the fp32 run's final images in each precision
        inverter = _inverter(module, size, batch, amp, 1, device)
        inverter.config = inverter.config.replace(lr=1e-12, jitter=0, flip=False)
        same[amp] = _objective(inverter, inverter.run(y, y.clone(), finals["none"][1], seed=0).terms)
    print(f"objective after {agree_iters} iterations: bf16 {finals['bf16'][0]:.5g}, fp32 {finals['none'][0]:.5g}; "
          f"fp32 images evaluated in bf16 {same['bf16']:.5g}, in fp32 {same['none']:.5g}", flush=True)
    result("bf16_vs_fp32_loss", abs(finals["bf16"][0] / finals["none"][0] - 1), f"after {agree_iters} iterations from the same start")
    result("bf16_vs_fp32_same_images", abs(same["bf16"] / same["none"] - 1))

    ratio, _ = collect_overhead.case("r50", "resnet50", size, 8 if quick else 256, 2 if quick else 3, 1 if quick else 3, device)
    result("collect_ratio_r50", ratio, "in memory; goal >= 0.95")
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
