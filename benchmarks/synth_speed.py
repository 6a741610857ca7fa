"""Synthesis speed: the engine's time per iteration against a bare forward+backward and a DeepInversion-style loop.

Run: ``python benchmarks/synth_speed.py`` (``--device cuda`` on a GPU machine). For every case
the loops run on the same model and batch, interleaved in rounds, and the medians are
compared, so the ratios hold even on a busy machine:

* bare: ``model(x)``, cross-entropy, ``backward()`` w.r.t. the input only (parameters frozen);
* bare, fused BatchNorm: the same step with the model's BatchNorm layers run by sowmeta's fused
  kernel (``sowmeta.moments.native``; on the CPU only, elsewhere it equals bare), their moments
  computed and thrown away: engine / this is what the statistics cost beyond the layers themselves;
* engine: ``sowmeta.synth.Inverter`` in cc mode, 10 classes mixed in the batch (the per-group path),
  per iteration in the steady state (a batch's one-off set-up and final verdict pass excluded).
  Engine iterations and bare steps alternate one by one (``paired_loop``: a bare step runs in the
  engine's progress callback after every iteration), and the medians over every pair are compared;
* engine, no kernel: the same with the dispatch table's ``native`` row switched off (the moments by
  hooks and the one-pass reductions, BatchNorm by PyTorch), paired with bare steps the same way:
  (engine, no kernel / its bare) over (engine / bare) is what the kernel gains;
* DI reference: the loop of the public DeepInversion code, written here: hooks that compute the
  variance through ``permute/contiguous/view``, parameters left trainable, Adam on the input;
* DI reference, frozen: the same loop with the parameters frozen, so that the speed-up is not
  only the weight gradients the public code computes and throws away.

The last line is ``RESULT iter_over_fwdbwd=<worst engine/bare> speedup_vs_di_ref=<worst DI/engine>``;
the lines before it give the worst speed-up against the frozen reference, the worst engine /
bare-with-fused-BatchNorm ratio and, per case, the kernel's gain (``kernel_gain_<model>=``).
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sowmeta.moments import fused_batchnorms
from sowmeta.moments.dispatch import switched_off
from sowmeta.models import load_model
from sowmeta.models.preprocess import Preprocessing
from sowmeta.synth import SynthConfig
from sowmeta.synth.engine import Inverter, TapTarget
from sowmeta.models.taps import resolve_taps


@dataclass
class Case:
    model: str
    size: int
    batch: int
    amp: str = "none"


CPU_CASES = [Case("cifar-resnet20", 32, 64), Case("resnet18", 224, 8)]
GPU_CASES = [Case("cifar-resnet20", 32, 256, "bf16"), Case("resnet50", 224, 128, "bf16")]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _targets(module: nn.Module, classes: int) -> list[TapTarget]:
    """Class-conditional targets with the model's tap shapes (BN running statistics, perturbed per class)."""
    g = torch.Generator().manual_seed(0)
    named = dict(module.named_modules())
    out = []
    for t in resolve_taps(module, "bn-inputs"):
        bn = named[t.module]
        c = bn.num_features
        mean = bn.running_mean.float().cpu()[None] + 0.1 * torch.randn(classes, c, generator=g)
        var = bn.running_var.float().cpu()[None] * (1 + 0.1 * torch.rand(classes, c, generator=g))
        out.append(TapTarget(t, mean, var))
    return out


def bare_step(module: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: object) -> None:
    """The physical limit of a synthesis step: forward, cross-entropy, backward to the input ``x`` (a leaf)."""
    x.grad = None
    with autocast:  # type: ignore[attr-defined]
        logits = module(x)
    F.cross_entropy(logits.float(), y).backward()


def di_reference_loop(
    module: nn.Module, x0: torch.Tensor, y: torch.Tensor, iters: int, autocast: object, *, frozen: bool = False
) -> float:
    """The public DeepInversion loop's per-iteration work (ImageNet script's structure)."""
    losses: list[torch.Tensor] = []
    for p in module.parameters():
        p.requires_grad_(not frozen)

    def hook(mod: nn.BatchNorm2d, inputs: tuple[torch.Tensor], _out: torch.Tensor) -> None:
        nch = inputs[0].shape[1]
        mean = inputs[0].mean([0, 2, 3])
        var = inputs[0].permute(1, 0, 2, 3).contiguous().view([nch, -1]).var(1, unbiased=False)
        losses.append(torch.norm(mod.running_var.data - var, 2) + torch.norm(mod.running_mean.data - mean, 2))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.1, betas=(0.5, 0.9), eps=1e-8)
    rng = random.Random(0)
    scales = [10.0] + [1.0] * (len(handles) - 1)
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(iters):
        dx, dy = rng.randint(-2, 2), rng.randint(-2, 2)
        x_jit = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
        if rng.random() < 0.5:
            x_jit = torch.flip(x_jit, dims=(3,))
        opt.zero_grad()
        module.zero_grad()
        with autocast:  # type: ignore[attr-defined]
            logits = module(x_jit)
        loss = F.cross_entropy(logits.float(), y)
        d1 = x_jit[:, :, :, :-1] - x_jit[:, :, :, 1:]
        d2 = x_jit[:, :, :-1, :] - x_jit[:, :, 1:, :]
        d3 = x_jit[:, :, 1:, :-1] - x_jit[:, :, :-1, 1:]
        d4 = x_jit[:, :, :-1, :-1] - x_jit[:, :, 1:, 1:]
        loss = loss + 1e-4 * (torch.norm(d1) + torch.norm(d2) + torch.norm(d3) + torch.norm(d4))
        loss = loss + 1e-5 * torch.norm(x_jit.view(x_jit.shape[0], -1), dim=1).mean()
        loss = loss + 0.01 * sum(s * l for s, l in zip(scales, losses))
        losses.clear()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(-3, 3)
    _sync(x.device)
    for h in handles:
        h.remove()
    for p in module.parameters():
        p.requires_grad_(True)
    return (time.perf_counter() - start) / iters


def paired_loop(
    inverter: Inverter, bare_module: nn.Module, x0: torch.Tensor, x_norm: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
    iters: int, autocast: object,
) -> tuple[list[float], list[float], list[float]]:
    """Engine iterations and bare steps, alternated one by one: seconds of each, in the steady state.

    The engine runs one batch of ``iters`` iterations; its progress callback (called after every
    iteration) times the iteration just done, then runs one bare step on ``bare_module`` (a copy of
    the model without the engine's hooks) and times it. Each engine iteration thus has a bare step
    beside it on the same machine state, which cancels the drift of a shared machine; the first
    few pairs (the batch's set-up, a cold allocator) are dropped. A bare step with the model's
    BatchNorm layers through the fused kernel follows each (the third list).
    """
    engine: list[float] = []
    bare: list[float] = []
    fused: list[float] = []
    taps = [t.tap for t in inverter.targets]
    xb = x_norm.clone().requires_grad_(True)
    last = [0.0]

    def step(_info: object) -> None:
        _sync(x0.device)
        engine.append(time.perf_counter() - last[0])
        start = time.perf_counter()
        bare_step(bare_module, xb, y, autocast)
        _sync(x0.device)
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        with fused_batchnorms(bare_module, taps, lambda *_: None, contract="raw"):
            bare_step(bare_module, xb, y, autocast)
        _sync(x0.device)
        fused.append(time.perf_counter() - start)
        last[0] = time.perf_counter()

    inverter.config = inverter.config.replace(iterations=iters)
    last[0] = time.perf_counter()
    inverter.run(y, rows, x0, seed=0, progress=step, report_every=1)
    skip = min(3, iters // 4)
    return engine[skip:], bare[skip:], fused[skip:]


def run_case(case: Case, device: torch.device, iters: int, rounds: int) -> tuple[float, float, float, float, float, float]:
    from contextlib import nullcontext

    torch.manual_seed(0)
    loaded = load_model(case.model, weights="none")
    module = loaded.module.to(device).eval()
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    classes = 10
    targets = [TapTarget(t.tap, t.mean.to(device), t.var.to(device), t.weight) for t in _targets(module, classes)]
    prep = Preprocessing(crop=case.size)
    cfg = SynthConfig(mode="cc", iterations=iters, batch_size=case.batch, amp=case.amp, jitter=2, lr=0.1)
    inverter = Inverter(module, targets, prep, cfg, device)
    y = torch.arange(case.batch, device=device) % classes
    rows = y.clone()
    x0 = torch.rand(case.batch, 3, case.size, case.size, device=device)
    x_norm = prep.normalize(x0)
    if device.type == "cuda":
        x_norm = x_norm.contiguous(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(case.amp)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None and device.type == "cuda" else nullcontext()
    bare_module = copy.deepcopy(module).requires_grad_(False)
    paired_loop(inverter, bare_module, x0, x_norm, y, rows, 4, autocast)  # warm-up (allocator, kernels, autotuning)
    di_reference_loop(module, x_norm, y, 2, autocast)
    bare, eng, di, di_frozen, fused, no_kernel = [], [], [], [], [], []
    for _ in range(rounds):
        e, b, f = paired_loop(inverter, bare_module, x0, x_norm, y, rows, 2 * iters, autocast)
        eng += e
        bare += b
        fused += f
        with switched_off("native"):
            e2, b2, _ = paired_loop(inverter, bare_module, x0, x_norm, y, rows, 2 * iters, autocast)
        no_kernel += [a / c for a, c in zip(e2, b2)]  # each no-kernel iteration over the bare step beside it
        di.append(di_reference_loop(module, x_norm, y, iters, autocast))
        di_frozen.append(di_reference_loop(module, x_norm, y, iters, autocast, frozen=True))
    return (statistics.median(bare), statistics.median(eng), statistics.median(di), statistics.median(di_frozen), statistics.median(fused),
            statistics.median(no_kernel))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=10, help="iterations per timed loop")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    ap.add_argument("--images-per-second", action="store_true", help="GPU: also time 2k-iteration batches (images/s)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    cases = GPU_CASES if device.type == "cuda" else CPU_CASES
    ratios, speedups, frozen_speedups, over_fused, gains = [], [], [], [], []
    print(f"device {device}, {args.rounds} rounds x {args.iters} iterations, torch {torch.__version__}")
    print(f"{'case':<34}{'bare ms':>9}{'engine ms':>11}{'DI ref ms':>11}{'DI frozen ms':>14}{'engine/bare':>13}{'DI/engine':>11}"
          f"{'DI frozen/engine':>18}{'fused bare ms':>15}{'engine/fused bare':>19}{'no kernel/bare':>16}")
    for case in cases:
        bare, eng, di, di_frozen, fused, no_kernel = run_case(case, device, args.iters, args.rounds)
        gains.append((case.model, no_kernel / (eng / bare)))
        ratios.append(eng / bare)
        over_fused.append(eng / fused)
        speedups.append(di / eng)
        frozen_speedups.append(di_frozen / eng)
        name = f"{case.model} {case.size}px b{case.batch} amp={case.amp}"
        print(f"{name:<34}{bare * 1e3:>9.2f}{eng * 1e3:>11.2f}{di * 1e3:>11.2f}{di_frozen * 1e3:>14.2f}{eng / bare:>13.3f}"
              f"{di / eng:>11.2f}{di_frozen / eng:>18.2f}{fused * 1e3:>15.2f}{eng / fused:>19.3f}{no_kernel:>16.3f}")
        if args.images_per_second and device.type == "cuda":
            print(f"  {case.model}: {case.batch / (eng * 2000):.1f} images/s at 2k iterations")
    print(f"speedup_vs_di_ref_frozen={min(frozen_speedups):.2f}")
    print(f"iter_over_fused_bare={max(over_fused):.3f}")
    print(" ".join(f"kernel_gain_{model}={gain:.3f}" for model, gain in gains))
    print(f"RESULT iter_over_fwdbwd={max(ratios):.3f} speedup_vs_di_ref={min(speedups):.2f}")


if __name__ == "__main__":
    main()
