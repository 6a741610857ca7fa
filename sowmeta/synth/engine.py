"""The inner loop: optimize one batch of images against a model and target statistics.

Loss (paper Eq. 1-7): alpha_ce CE(f(x), y) + alpha_TV R_TV(x) + alpha_l2 R_l2(x)
+ alpha_CC sum_l lambda_l F_l(stats of x_l per class group, target stats of that class),
each a ``Term`` (``terms.py``), followed by any terms of the user's.
Forward hooks reduce every tap's features to per-image moments on the spot, so the
statistics term costs two small reductions per tap and no feature map is copied.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..moments import DispatchLog, raw_moments, recording_taps
from ..errors import ConfigError, DivergenceError
from ..logits import logits_of
from ..models.preprocess import Preprocessing
from ..models.taps import Tap
from .augment import augment
from .canvas import Canvas
from .config import SynthConfig
from .jpeg_view import jpeg_view
from .param import make_parameterization
from .losses import Segments, get_feature_loss
from .terms import Step, TargetStats, Term, objective

__all__ = ["TapTarget", "BatchResult", "IterationInfo", "Step", "Term", "objective", "Inverter", "tap_weights", "warmup_cosine"]  # Step, Term, objective: from .terms

log = logging.getLogger(__name__)


def _cpu_bf16(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether bf16 autocast runs natively here: a CPU with AVX512-BF16 or AMX (elsewhere it is emulated, and slow)."""
    return dtype is torch.bfloat16 and device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())

_CHECK_EVERY = 25  # iterations between finiteness checks (each one synchronizes the GPU)


@dataclass
class TapTarget:
    """Target statistics of one tap: row r of ``mean``/``var`` (R x C) belongs to target row r.

    ``image_var``: the variance of the per-image means (R x C), when the bundle has it (format 1.3).
    """

    tap: Tap
    mean: torch.Tensor
    var: torch.Tensor
    weight: float = 1.0
    image_var: torch.Tensor | None = None


@dataclass
class IterationInfo:
    """What the progress display shows about the batch being optimized."""

    iteration: int
    iterations: int
    terms: dict[str, float]


@dataclass
class BatchResult:
    """One optimized batch: images in [0, 1] (B x 3 x H x W, on CPU) and the teacher's verdict on them."""

    images: torch.Tensor
    confidence: torch.Tensor  # softmax probability of the target class
    loss: torch.Tensor  # cross-entropy of the target class
    prediction: torch.Tensor  # the teacher's top-1 class
    terms: dict[str, float]
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)


def warmup_cosine(it: int, warmup: int, iterations: int) -> float:
    """The learning-rate factor at iteration ``it``: linear warmup, then cosine decay to 0 (for ``LambdaLR``)."""
    if it < warmup:
        return (it + 1) / warmup
    t = (it - warmup) / max(1, iterations - warmup)
    return 0.5 * (1 + math.cos(math.pi * t))


def tap_weights(taps: list[Tap], config: SynthConfig) -> list[float]:
    """lambda_l for every tap: 1, or the first matching glob in ``tap_weights``, times the first-tap multiplier,
    times ``tap_decay`` ** (l / (L - 1)) for the l-th of L taps (the last tap's weight relative to the first's).

    A pattern that matches no tap is an error (a typo would otherwise silently change nothing).
    """
    unused = [pat for pat in config.tap_weights if not any(fnmatch.fnmatchcase(t.name, pat) for t in taps)]
    if unused:
        names = ", ".join(t.name for t in taps[:6]) + (", ..." if len(taps) > 6 else "")
        raise ConfigError(f"tap weight {unused[0]!r} matches no tap; the taps are {names} (globs like 'layer1.*' work)")
    out = []
    for i, t in enumerate(taps):
        w = next((v for pat, v in config.tap_weights.items() if fnmatch.fnmatchcase(t.name, pat)), 1.0)
        depth = config.tap_decay ** (i / (len(taps) - 1)) if len(taps) > 1 else 1.0
        out.append(w * (config.first_tap_multiplier if i == 0 else 1.0) * depth)
    return out


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the block (only the image is optimized)."""
    was_training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def _side_by_side(targets: list[TapTarget], device: torch.device) -> TargetStats | None:
    """All taps' targets side by side on one channel axis, so the statistics terms are a handful of ops."""
    if not targets:
        return None
    spread = all(t.image_var is not None for t in targets)
    return TargetStats(
        [t.tap.name for t in targets],
        torch.cat([t.mean for t in targets], dim=1).to(device),
        torch.cat([t.var for t in targets], dim=1).to(device),
        torch.cat([t.image_var for t in targets], dim=1).to(device) if spread else None,  # type: ignore[misc]
        torch.tensor([t.weight for t in targets], device=device),
        Segments.of([int(t.mean.shape[1]) for t in targets], device),
    )


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


class Inverter:
    """Optimizes batches of images for one model, one set of taps and their target statistics.

    Args:
        module: the classifier (its parameters are frozen during ``run``).
        targets: per tap, the target statistics (rows indexed by ``run``'s ``rows``).
        preprocessing: maps images in [0, 1] to the model's input (its mean/std).
        config: the objective and the schedule.
        device: where the optimization runs.
        terms: terms of your own, added to the objective after the paper's (``synth.terms``).
    """

    def __init__(
        self,
        module: nn.Module,
        targets: list[TapTarget],
        preprocessing: Preprocessing,
        config: SynthConfig,
        device: torch.device | str = "cpu",
        terms: Sequence[Term] = (),
    ) -> None:
        self.module = module
        self.targets = targets
        self.config = config
        self.device = torch.device(device)
        self.feature_loss = get_feature_loss(config.feature_loss)
        self.mean = torch.tensor(preprocessing.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocessing.std, device=self.device).view(1, 3, 1, 1)
        self.lo, self.hi = -self.mean / self.std, (1 - self.mean) / self.std
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        if self.autocast_dtype is not None and self.device.type != "cuda" and not _cpu_bf16(self.autocast_dtype, self.device):
            log.warning("AMP (%s) needs a CUDA device or, for bf16, a CPU with native bf16 (AVX512-BF16 or AMX); running in float32 on %s",
                        config.amp, self.device)
            self.autocast_dtype = None
        self.channels_last = self.device.type == "cuda" if config.channels_last is None else config.channels_last
        self._moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.moments_log = DispatchLog("synthesize")  # which implementation computes each tap's moments, said once
        self.target_stats = _side_by_side(targets, self.device)
        self.terms = objective(config, self.target_stats, self.feature_loss, terms)

    def _as_stored(self, x: torch.Tensor) -> torch.Tensor:
        """The batch (normalized) as the JPEG files the statistics came from would hold it (``jpeg_quality``)."""
        pixels = jpeg_view(x * self.std + self.mean, self.config.jpeg_quality, self.config.jpeg_subsampling)
        return (pixels - self.mean) / self.std

    def _record(self, tap: Tap, x: torch.Tensor, native: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """A tap's E[x] and E[x^2] per image: the fused kernel's, or ``raw_moments`` of the feature."""
        if native is not None:
            self.moments_log.note(tap.name, "native")
        self._moments[tap.name] = native if native is not None else raw_moments(x, tap.axis, log=self.moments_log, tap=tap.name)

    def term_values(
        self, x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, group_rows: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Every term's value for a forward pass whose tap moments the hooks just recorded (then forgotten)."""
        step = Step(x, logits, labels, groups, group_rows, self._moments, self.target_stats)
        self._moments = {}
        self.moments_log.say()
        return {t.name: t.value(step) for t in self.terms}

    def run(
        self,
        labels: torch.Tensor,
        rows: torch.Tensor,
        init: torch.Tensor,
        *,
        seed: int,
        progress: Callable[[IterationInfo], None] | None = None,
        report_every: int = 10,
    ) -> BatchResult:
        """Optimize one batch.

        Args:
            labels: the class (model output index) of every image, B.
            rows: every image's row in the targets (its class's row in ``cc`` mode, 0 otherwise).
            init: initial images in [0, 1], B x 3 x H x W.
            seed: seeds jitter and flips (the batch's result depends only on it and ``init``).
            progress: called every ``report_every`` iterations and at the end.
        """
        cfg = self.config
        dev = self.device
        labels, rows = labels.to(dev), rows.to(dev)
        group_rows, groups = torch.unique(rows, return_inverse=True)
        canvas = Canvas.around(init, cfg.canvas_margin)
        param = make_parameterization(
            cfg.param, canvas.pad(init.to(dev)), self.mean, self.std, from_noise=cfg.init == "noise", channels_last=self.channels_last
        )
        opt, schedule, scaler = self._optimizer(param.tensors())
        rng = random.Random(seed)
        autocast = (
            torch.autocast(dev.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None else nullcontext()
        )
        low_res_until = int(cfg.multires * cfg.iterations)
        snapshots: list[tuple[int, torch.Tensor]] = []
        finite = torch.ones((), dtype=torch.bool, device=dev)
        terms: dict[str, torch.Tensor] = {}
        module = self.module.to(memory_format=torch.channels_last) if self.channels_last else self.module
        with _frozen(module), recording_taps(module, [t.tap for t in self.targets], self._record, contract="raw"):
            for it in range(cfg.iterations):
                opt.zero_grad(set_to_none=True)
                full = param.image()
                # with jpeg_quality: the encoded copy's features meet the statistics, the image's own logits the CE
                x_in = torch.cat([canvas.with_image(full, self._as_stored(canvas.image(full))), full]) if cfg.jpeg_quality else full
                x_in = canvas.window(x_in, rng)
                x = x_in[-len(full):]  # the images as the model sees them before augmentation: what R_TV and R_l2 judge
                x_in = augment(x_in, rng, jitter=cfg.jitter if cfg.jitter_wrap else 0, flip=cfg.flip, low_res=it < low_res_until, zoom_amount=cfg.zoom,
                               color=cfg.color_shift, lo=self.lo, hi=self.hi)
                with autocast:
                    logits = logits_of(module(x_in))
                if cfg.jpeg_quality:
                    logits = logits[len(x):]
                    self._moments = {k: (m[: len(x)], s[: len(x)]) for k, (m, s) in self._moments.items()}
                terms = self.term_values(x, logits, labels, groups, group_rows)
                loss = sum(t.weight * terms[t.name] for t in self.terms)
                finite &= torch.isfinite(loss)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                schedule.step()
                param.project()
                done = it + 1
                if done % _CHECK_EVERY == 0 or done == cfg.iterations:
                    _check_finite(finite, done)
                if cfg.save_every and done % cfg.save_every == 0 and done != cfg.iterations:
                    with torch.no_grad():
                        snapshots.append((done, _to_uint8(canvas.image(param.image()) * self.std + self.mean)))
                if progress is not None and (done % report_every == 0 or done == cfg.iterations):
                    progress(IterationInfo(done, cfg.iterations, {k: float(v.detach()) for k, v in terms.items()} | {"total": float(loss.detach())}))
            with torch.no_grad():
                x = canvas.image(param.image()).detach()
            with torch.no_grad(), autocast:
                logits = logits_of(module(x)).float()
            self._moments.clear()
        return self._result(x, logits, labels, terms, snapshots)

    def _optimizer(self, tensors: list[torch.Tensor]) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR, torch.amp.GradScaler | None]:
        """Adam over the image's tensors, the warmup-cosine schedule, and a gradient scaler under fp16 AMP."""
        cfg = self.config
        opt = torch.optim.Adam(tensors, lr=cfg.lr, betas=cfg.betas)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: warmup_cosine(it, cfg.warmup, cfg.iterations))
        scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and self.autocast_dtype is not None else None
        return opt, schedule, scaler

    def _result(
        self, x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, terms: dict[str, torch.Tensor], snapshots: list[tuple[int, torch.Tensor]]
    ) -> BatchResult:
        """The final images (in [0, 1], on the CPU) with the teacher's verdict on them."""
        ce = F.cross_entropy(logits, labels, reduction="none")
        confidence = logits.softmax(dim=1).gather(1, labels[:, None]).squeeze(1)
        images = (x * self.std + self.mean).clamp(0, 1).float().contiguous().cpu()
        return BatchResult(images, confidence.cpu(), ce.cpu(), logits.argmax(dim=1).cpu(), {k: float(v.detach()) for k, v in terms.items()}, snapshots)


def _check_finite(finite: torch.Tensor, done: int) -> None:
    """Stop a run whose loss was NaN or infinite at some iteration so far (a sync of the device: done every few iterations)."""
    if not bool(finite):
        raise DivergenceError(
            f"the loss became NaN or infinite by iteration {done}; lower --lr or the loss weights (--alpha-cc, --alpha-tv), or use --amp none",
            iteration=done,
        )
