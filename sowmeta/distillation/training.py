"""Knowledge distillation from a synthesized image set (or any labelled image folder) into a new student.

The student learns to match the teacher's temperature-softened outputs on the images (Hinton et
al. 2015); the images' labels are not used. Every epoch ends with the student's top-1 accuracy
on a real test folder and a checkpoint, so a run can be interrupted and resumed: data order and
augmentation derive from ``seed`` and the epoch, and the checkpoint holds everything else
(weights, optimizer, schedule, RNG states), so a resumed run equals an uninterrupted one.

Files in ``out``: ``checkpoint.pt`` (after every epoch), and when the run is complete
``student.safetensors`` (the weights, loadable with ``load_model(student, weights=...)``) and
``metrics.json`` (test accuracy per epoch, the teacher's, the configuration).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..atomic import atomic_file
from .config import DistillConfig
from ..devices import check_device
from ..data.folders import default_workers
from ..errors import ConfigError, DataError, DivergenceError, OutputExistsError, storage_errors
from ..outputs import RUN_FILES, check_output
from ..logits import logits_of
from ..evaluation.metrics import network_name, run_model, top1_accuracy
from ..models import LoadedModel, load_model
from ..models.preprocess import Preprocessing
from ..data.image_sets import SynthDataset, SynthInfo, fit_square, load_images, read_info
from ..version import __version__

__all__ = [
    "DistillConfig",
    "DistillProgress",
    "DistillResult",
    "distill",
    "kd_loss",
    "augment",
    "CHECKPOINT",
    "STUDENT",
    "METRICS",
]

log = logging.getLogger(__name__)

CHECKPOINT, STUDENT, METRICS = RUN_FILES
_FORMAT = "sowmeta-distill"
_FORMAT_VERSION = 1
# Data sets up to this size (decoded) are read into memory once: random h5py reads cost ~0.2 ms per
# image, and decoding the test folder's JPEGs again every epoch would cost more than scoring them.
_IN_MEMORY_BYTES = 4 << 30


@dataclass(frozen=True)
class DistillProgress:
    """What the progress callback receives: after each batch, and once more after each epoch's test."""

    epoch: int  # 1-based
    epochs: int
    batch: int  # batches done in this epoch
    batches: int
    loss: float  # KD loss of the last batch
    test_accuracy: float | None = None  # set on the end-of-epoch call


@dataclass
class DistillResult:
    """A finished run: where its files are, its metrics, and the trained student."""

    out: Path
    student_path: Path
    metrics_path: Path
    metrics: dict[str, Any]
    student: LoadedModel = field(repr=False)

    @property
    def test_accuracy(self) -> float:
        """The student's top-1 accuracy on the test folder after the last epoch."""
        return float(self.metrics["final_test_accuracy"])


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), summed over classes and averaged over the batch (Hinton et al. 2015).

    The T² factor keeps the gradients' scale independent of T.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


def augment(x: torch.Tensor, generator: torch.Generator, *, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random horizontal flip and random crop after zero-padding by ``pad``, per image (N x C x H x W, any dtype).

    Random numbers come from ``generator`` (on the CPU), so the result depends only on its state.
    """
    n, _, h, w = x.shape
    flips = torch.rand(n, generator=generator) < 0.5 if flip else None
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator) if pad else None
    if flips is not None:
        x = torch.where(flips.to(x.device).view(n, 1, 1, 1), x.flip(-1), x)
    if shifts is not None:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy, dx = shifts[:, 0].to(x.device), shifts[:, 1].to(x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[batch, chan, rows, cols]
    return x


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    # SeedSequence mixes the three numbers well: nearby (seed, epoch) pairs give unrelated streams.
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _dataset(path: Path, crop: int, resize: int | None, labels: Sequence[str] | None = None) -> Dataset:
    """The images of ``path`` fitted to ``crop`` (folders matched to ``labels`` by name): in memory when they fit in ``_IN_MEMORY_BYTES``, else streamed."""
    streamed = SynthDataset(path, transform=functools.partial(fit_square, size=crop, resize=resize), names=labels)
    if len(streamed) * 3 * crop * crop > _IN_MEMORY_BYTES:
        return streamed
    if streamed.info.kind == "hdf5":
        images, labels = load_images(path, size=crop)
    else:
        images, labels = torch.stack([streamed[i][0] for i in range(len(streamed))]), streamed.labels.clone()
    streamed.close()
    return TensorDataset(images, labels)


def _check_out(out: Path, data: Path, test: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, an ``out`` that is not a run directory sowmeta may use."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory; choose another output directory")
    if out.exists() and not resume and not overwrite:
        raise OutputExistsError(f"{out} already exists; choose another output directory, pass --resume to continue it, or --overwrite")
    check_output(out, "run-dir", overwrite=True, inputs=[("--synth", data), ("--test", test)])


def _prepare_out(out: Path, *, overwrite: bool) -> None:
    with storage_errors("write", out):
        if overwrite:
            for name in (CHECKPOINT, STUDENT, METRICS):
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)


def _autocast(device: torch.device, amp: str) -> Any:
    if device.type != "cuda" or amp == "none":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _load_checkpoint(path: Path, run: dict[str, Any]) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise DataError(f"cannot read checkpoint {path}: {exc}; pass --overwrite to start over") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise DataError(f"{path} is not a sowmeta distillation checkpoint; pass --overwrite to start over")
    if ckpt.get("format_version") != _FORMAT_VERSION:
        raise DataError(f"{path} has checkpoint version {ckpt.get('format_version')}, this sowmeta writes {_FORMAT_VERSION}; pass --overwrite to start over")
    old = ckpt.get("run", {})
    diff = sorted(k for k in set(old) | set(run) if old.get(k) != run.get(k))
    if diff:
        k = diff[0]
        raise ConfigError(
            f"the run in {path.parent} was started with other settings ({k}: {old.get(k)!r}, now {run.get(k)!r}); "
            "resume with the same options, or pass --overwrite to start over"
        )
    return ckpt


def distill(
    data: str | Path,
    teacher: LoadedModel,
    student: str,
    *,
    test: str | Path,
    out: str | Path,
    config: DistillConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: Callable[[DistillProgress], None] | None = None,
) -> DistillResult:
    """Train a new ``student`` (a model name) to mimic ``teacher`` on the images of ``data``.

    The student is built with random weights and the teacher's class count, and is trained on
    the teacher's inputs: images fitted to the teacher's input size, normalized with its mean
    and std (the student's preprocessing is the teacher's, and is saved with it).

    Args:
        data: an HDF5 synthesis file or a class-per-folder image directory (labels unused).
        teacher: the network to distill; run in eval mode without gradients.
        student: a model name ``load_model`` accepts (e.g. ``cifar-resnet20``).
        test: a class-per-folder directory of real images, evaluated after every epoch.
        out: the run's directory (``checkpoint.pt``, ``student.safetensors``, ``metrics.json``).
        config: hyper-parameters (default ``DistillConfig()``).
        resume: continue from ``out/checkpoint.pt`` when it exists (start afresh when it does
            not); the settings must equal the checkpoint's.
        overwrite: discard a previous run in ``out``.
        device: where both networks run; autocast (``config.amp``) is used on CUDA only.
        workers: processes decoding images (0: in this process; default: chosen for the cores
            there are, ``data.default_workers``).
        progress: called with a ``DistillProgress`` after every batch and every epoch.

    Raises:
        OutputExistsError: ``out`` exists and neither ``resume`` nor ``overwrite`` was given.
        ConfigError: the checkpoint in ``out`` was made with other settings.

    Example:
        >>> t = load_model("cifar-resnet56", weights="resnet56.safetensors")  # doctest: +SKIP
        >>> r = distill("synth.h5", t, "cifar-resnet20", test="cifar10/test", out="kd-run")  # doctest: +SKIP
        >>> r.test_accuracy  # doctest: +SKIP
    """
    config = config if config is not None else DistillConfig()
    data, test, out = Path(data), Path(test), Path(out)
    _check_paths(data, test)
    workers = default_workers(device) if workers is None else workers
    if workers < 0:
        raise ConfigError(f"workers must be 0 or more, not {workers}")
    labels = list(teacher.labels) if teacher.labels else None
    info = _read_infos(data, test, teacher, labels)
    if resume and overwrite:
        raise ConfigError("pass either resume (continue the run in out) or overwrite (start over), not both")
    _check_out(out, data, test, resume=resume, overwrite=overwrite)

    dev = check_device(device)
    prep = teacher.preprocessing
    run = {
        "data": str(data.resolve()),
        "images": info.images,
        "teacher": network_name(teacher),
        "student": student,
        "test": str(test.resolve()),
        "config": config.to_dict(),
    }
    # The caller's global RNG is left as it was; inside, it is seeded (or restored from the checkpoint).
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(config.seed)
        pupil = load_model(student, weights="none", num_classes=teacher.num_classes, preprocessing=prep)
        _prepare_out(out, overwrite=overwrite)
        return _train(data, teacher, pupil, test, out, config, run, resume, dev, workers, progress, labels)


def _check_paths(data: Path, test: Path) -> None:
    """Both image sets exist, and the test set is a class-per-folder directory."""
    for what, p in (("data", data), ("test folder", test)):
        if not p.exists():
            raise DataError(f"{what} {p} does not exist; pass an HDF5 file from `sowmeta synthesize` or a class-per-folder directory")
    if not test.is_dir():
        raise DataError(f"test folder {test} is not a directory; pass real images as <dir>/<class>/<image>")


def _read_infos(data: Path, test: Path, teacher: LoadedModel, labels: list[str] | None) -> SynthInfo:
    """The data's description, once it holds images and neither set has more classes than the teacher predicts."""
    info = read_info(data, names=labels)
    test_info = read_info(test, names=labels)
    for what, i in (("data", info), ("test folder", test_info)):
        if len(i.per_class) > teacher.num_classes:
            raise DataError(f"{what} {i.path} has {len(i.per_class)} classes but the teacher predicts {teacher.num_classes}")
    if info.images == 0:
        raise DataError(f"{data} holds no images")
    return info


def _train(
    data: Path,
    teacher: LoadedModel,
    pupil: LoadedModel,
    test: Path,
    out: Path,
    config: DistillConfig,
    run: dict[str, Any],
    resume: bool,
    device: torch.device,
    workers: int,
    progress: Callable[[DistillProgress], None] | None,
    labels: list[str] | None,
) -> DistillResult:
    prep = teacher.preprocessing
    t_module = teacher.module.to(device).eval()
    s_module = pupil.module.to(device)
    optimizer = torch.optim.SGD(s_module.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.amp == "fp16")
    test_set = _dataset(test, prep.crop, prep.resize, labels)
    test_workers = workers if isinstance(test_set, SynthDataset) else 0  # in memory: nothing left to decode
    score = functools.partial(run_model, batch_size=max(256, config.batch_size), device=device, workers=test_workers)

    ckpt_path = out / CHECKPOINT
    history: dict[str, list[float]] = {"train_loss": [], "test_accuracy": [], "lr": [], "seconds": []}
    start_epoch = 0
    if resume and ckpt_path.exists():
        ckpt = _load_checkpoint(ckpt_path, run)
        s_module.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"], device)
        history = {k: list(v) for k, v in ckpt["history"].items()}
        start_epoch = int(ckpt["epoch"])
        teacher_acc = float(ckpt["teacher_test_accuracy"])
        log.info("resuming %s after epoch %d of %d", out, start_epoch, config.epochs)
    else:
        out_t = score(teacher, test_set)
        teacher_acc = top1_accuracy(out_t.logits, out_t.labels)

    train_set = _dataset(data, prep.crop, prep.resize, labels)
    n = len(train_set)  # type: ignore[arg-type]
    batches = math.ceil(n / config.batch_size)
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        order = torch.randperm(n, generator=_generator(config.seed, epoch, 0)).tolist()
        plan = [order[i : i + config.batch_size] for i in range(0, n, config.batch_size)]
        aug = _generator(config.seed, epoch, 1)
        in_memory = isinstance(train_set, TensorDataset)  # nothing to decode: worker processes would only add start-up time
        loader = DataLoader(train_set, batch_sampler=plan, num_workers=0 if in_memory else workers, pin_memory=device.type == "cuda")
        lr = optimizer.param_groups[0]["lr"]
        step = _Step(t_module, s_module, prep, optimizer, scaler, config, device)
        total = _one_epoch(step, loader, aug, lambda b, loss, _e=epoch: progress(DistillProgress(_e + 1, config.epochs, b, batches, loss)) if progress else None)
        scheduler.step()
        mean_loss = float(total) / n
        if not math.isfinite(mean_loss):
            raise DivergenceError(f"the distillation loss became {mean_loss} in epoch {epoch + 1}; lower lr or use amp none", iteration=epoch + 1)
        out_s = score(pupil, test_set)
        acc = top1_accuracy(out_s.logits, out_s.labels)
        for key, value in (("train_loss", mean_loss), ("test_accuracy", acc), ("lr", lr), ("seconds", time.perf_counter() - began)):
            history[key].append(value)
        state = {"model": s_module, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        _save_checkpoint(ckpt_path, epoch + 1, run, state, device, history, teacher_acc)
        log.info("epoch %d/%d: loss %.4f, test top-1 %.4f", epoch + 1, config.epochs, mean_loss, acc)
        if progress is not None:
            progress(DistillProgress(epoch + 1, config.epochs, batches, batches, mean_loss, acc))
    if isinstance(test_set, SynthDataset):
        test_set.close()
    return _finish(out, pupil, run, history, teacher_acc, len(test_set), device)


@dataclass
class _Step:
    """What one distillation step uses: both networks, the teacher's preprocessing, the optimizer and the settings."""

    teacher: nn.Module
    student: nn.Module
    prep: Preprocessing
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    config: DistillConfig
    device: torch.device


def _one_epoch(s: _Step, loader: DataLoader, aug: torch.Generator, report: Callable[[int, float], None]) -> torch.Tensor:
    """One pass over the data: the student trained on the teacher's soft labels; the summed loss (float64, on the device)."""
    config, device = s.config, s.device
    s.student.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for b, (x, _labels) in enumerate(loader, start=1):
        x = x.to(device, non_blocking=True)
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        x = s.prep.normalize(augment(x, aug, pad=config.pad, flip=config.flip))
        with torch.no_grad(), _autocast(device, config.amp):
            t_logits = logits_of(s.teacher(x))
        with _autocast(device, config.amp):
            s_logits = logits_of(s.student(x))
        loss = kd_loss(s_logits.float(), t_logits.float(), config.temperature)
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
        s.scaler.step(s.optimizer)
        s.scaler.update()
        total += loss.detach().double() * x.shape[0]
        report(b, float(loss.detach()))
    return total


def _save_checkpoint(
    path: Path, epoch: int, run: dict[str, Any], state: dict[str, Any], device: torch.device, history: dict[str, list[float]], teacher_acc: float
) -> None:
    """Everything a resumed run needs after ``epoch`` epochs, written so that a crash leaves the previous checkpoint."""
    ckpt = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "epoch": epoch,
        "run": run,
        "model": state["model"].state_dict(),
        "optimizer": state["optimizer"].state_dict(),
        "scheduler": state["scheduler"].state_dict(),
        "scaler": state["scaler"].state_dict(),
        "rng": _rng_state(device),
        "history": history,
        "teacher_test_accuracy": teacher_acc,
    }
    with atomic_file(path) as tmp:
        torch.save(ckpt, tmp)


def _finish(
    out: Path,
    pupil: LoadedModel,
    run: dict[str, Any],
    history: dict[str, list[float]],
    teacher_acc: float,
    test_images: int,
    device: torch.device,
) -> DistillResult:
    from safetensors.torch import save_file

    module = pupil.module.eval()
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    meta = {
        "format": _FORMAT,
        "arch": pupil.name,
        "num_classes": str(pupil.num_classes),
        "preprocessing": json.dumps(pupil.preprocessing.to_dict()),
        "teacher": run["teacher"],
        "tool_version": __version__,
    }
    student_path, metrics_path = out / STUDENT, out / METRICS
    with atomic_file(student_path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    acc = history["test_accuracy"]
    metrics = {
        "format": _FORMAT,
        "student": pupil.name,
        "teacher": run["teacher"],
        "data": run["data"],
        "images": run["images"],
        "test": run["test"],
        "test_images": test_images,
        "config": run["config"],
        "preprocessing": pupil.preprocessing.to_dict(),
        "teacher_test_accuracy": teacher_acc,
        "final_test_accuracy": acc[-1],
        "best_test_accuracy": max(acc),
        "test_accuracy": acc,
        "train_loss": history["train_loss"],
        "lr": history["lr"],
        "seconds": sum(history["seconds"]),
        "device": str(device),
        "tool_version": __version__,
    }
    with atomic_file(metrics_path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    pupil.weights = str(student_path)
    return DistillResult(out, student_path, metrics_path, metrics, pupil)
