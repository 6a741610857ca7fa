"""``sowmeta demo``: the whole idea, offline, on a laptop CPU in a few minutes.

1. a labelled dataset where every class has its own shape and its own background;
2. a small BatchNorm CNN trained on it while ``TrainingCollector`` records Scenario-A statistics;
3. the bundle published to a local registry and pulled back by name;
4. images of every class synthesized in cc and di modes;
5. a side-by-side grid and a report: teacher accuracy on the synthesized images, and how far
   each mode's image borders (the background) are from the real class's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .atomic import atomic_file
from .errors import storage_errors
from .outputs import DEMO_MARKER, require_replaceable
from .collectors import TrainingCollector
from .demo_data import DEMO_CLASSES, border_stats, make_demo_images
from .models import load_model
from .synth import SynthConfig, SynthProgress, synthesize

__all__ = ["DemoConfig", "DemoReport", "run_demo"]

log = logging.getLogger(__name__)

DEMO_NAME = "demo/shapes-cnn"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``DemoConfig.quick()`` is the reduced size used by the tests."""

    train_per_class: int = 400
    test_per_class: int = 100
    epochs: int = 4
    synth_per_class: int = 12
    iterations: int = 1000
    # The CIFAR preset, with less smoothing: the demo's images are flat colours and sharp edges.
    alpha_tv: float = 1e-3
    first_tap_multiplier: float = 1.0
    seed: int = 0
    # CPU threads for the run (None: torch's default). The demo's tensors are tiny, so a second
    # thread buys little, while two threads on a 2-core machine busy with other work wait on each
    # other: measured there, a cc iteration took 160 ms with 2 threads and 40 ms with 1.
    threads: int | None = 1

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(train_per_class=160, test_per_class=40, epochs=3, synth_per_class=6, iterations=150)


@dataclass
class DemoReport:
    """The demo's measured numbers (also written to report.json)."""

    teacher_test_accuracy: float = 0.0
    accuracy: dict[str, float] = field(default_factory=dict)  # mode -> teacher top-1 on its images
    background_distance: dict[str, float] = field(default_factory=dict)  # mode -> mean over classes
    background_distance_per_class: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    registry_name: str = DEMO_NAME
    grid: str = ""


Stage = Callable[[str, int, int], None]


def _train(out: Path, cfg: DemoConfig, stage: Stage) -> tuple[Path, Path, float]:
    """Train the demo CNN, recording statistics during the last epoch; save weights and bundle."""
    from safetensors.torch import save_file

    x, y = make_demo_images(cfg.train_per_class, seed=cfg.seed)
    xt, yt = make_demo_images(cfg.test_per_class, seed=cfg.seed + 1)
    stage("dataset", 1, 1)
    torch.manual_seed(cfg.seed)  # before the model is built: its initial weights come from this generator
    loaded = load_model("demo-cnn", weights="none", num_classes=len(DEMO_CLASSES))
    model, prep = loaded.module, loaded.preprocessing
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = cfg.epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    collector = TrainingCollector(model, num_classes=len(DEMO_CLASSES))
    g = torch.Generator().manual_seed(cfg.seed)
    done = 0
    for epoch in range(cfg.epochs):
        model.train()
        last = epoch == cfg.epochs - 1
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            xb = prep.normalize(x[idx])
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            if last:
                with collector.observe(y[idx]):
                    logits = model(xb)
            else:
                logits = model(xb)
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            stage("train", done, steps)
    model.eval()
    with torch.no_grad():
        acc = (model(prep.normalize(xt)).argmax(1) == yt).float().mean().item()
    weights = out / "demo-cnn.safetensors"
    with atomic_file(weights) as tmp:
        save_file(model.state_dict(), str(tmp))
    bundle = collector.to_bundle(
        architecture="demo-cnn", preprocessing=prep, labels=[c.name for c in DEMO_CLASSES], weights=str(weights), data="demo shapes"
    )
    bundle_dir = bundle.save(out / "bundle", overwrite=True)
    return weights, bundle_dir, acc


def _background_distance(images: torch.Tensor, labels: torch.Tensor, real: torch.Tensor, real_labels: torch.Tensor) -> list[float]:
    """Per class: |mean border RGB - real's| + |border RGB std - real's|, each averaged over images."""
    out = []
    for k in range(len(DEMO_CLASSES)):
        sm, ss = border_stats(images[labels == k])
        rm, rs = border_stats(real[real_labels == k])
        out.append(float((sm.mean(0) - rm.mean(0)).norm() + (ss.mean(0) - rs.mean(0)).norm()))
    return out


def run_demo(out: str | Path, *, config: DemoConfig | None = None, device: str = "cpu", stage: Stage | None = None) -> DemoReport:
    """Run the five demo stages into ``out`` and return the report (also ``out/report.json``).

    ``stage(name, done, total)`` is called as each stage progresses; the names are ``dataset``,
    ``train``, ``registry``, ``synthesize cc``, ``synthesize di`` and ``grid+report``.
    """
    cfg = config or DemoConfig()
    threads = torch.get_num_threads()
    if cfg.threads is not None and torch.device(device).type == "cpu":
        torch.set_num_threads(cfg.threads)
    try:
        return _run(Path(out), cfg, device, stage or (lambda name, done, total: None))
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, cfg: DemoConfig, device: str, stage: Stage) -> DemoReport:
    from .registry import pull, push

    if out.exists():
        require_replaceable(out, "demo-dir", what="--out")
    with storage_errors("write", out):
        out.mkdir(parents=True, exist_ok=True)
        (out / DEMO_MARKER).write_text("written by sowmeta demo\n", encoding="utf-8")
    report = DemoReport()
    t = time.perf_counter()
    weights, bundle_dir, report.teacher_test_accuracy = _train(out, cfg, stage)
    report.seconds["train+collect"] = time.perf_counter() - t

    t = time.perf_counter()
    registry = out / "registry"
    push(bundle_dir, DEMO_NAME, registry=registry, message="sowmeta demo")
    pulled = pull(DEMO_NAME, registry=registry)  # synthesis files then record the name and commit
    stage("registry", 1, 1)
    report.seconds["push+pull"] = time.perf_counter() - t

    loaded = load_model("demo-cnn", weights=str(weights), num_classes=len(DEMO_CLASSES))
    real, real_labels = make_demo_images(cfg.synth_per_class * 4, seed=cfg.seed + 2)
    images: dict[str, torch.Tensor] = {}
    labels: dict[str, torch.Tensor] = {}
    for mode in ("cc", "di"):
        t = time.perf_counter()
        # DeepInversion at its best: mixed-class batches; cc: one class per batch, as in the paper
        sc = SynthConfig.cifar(
            mode=mode,
            iterations=cfg.iterations,
            alpha_tv=cfg.alpha_tv,
            first_tap_multiplier=cfg.first_tap_multiplier,
            seed=cfg.seed,
            batch_size=cfg.synth_per_class * (1 if mode == "cc" else len(DEMO_CLASSES)),
        )

        def progress(p: SynthProgress, _m: str = mode) -> None:
            if p.iteration is not None:
                stage(f"synthesize {_m}", (p.batch - 1) * p.iteration.iterations + p.iteration.iteration, p.batches * p.iteration.iterations)

        result = synthesize(
            pulled, loaded, per_class=cfg.synth_per_class, config=sc, out=out / f"synth-{mode}.h5", device=device, overwrite=True, progress=progress
        )
        images[mode], labels[mode] = result.images(), result.labels
        report.accuracy[mode] = result.teacher_accuracy
        per_class = _background_distance(images[mode], labels[mode], real, real_labels)
        report.background_distance_per_class[mode] = per_class
        report.background_distance[mode] = sum(per_class) / len(per_class)
        report.seconds[f"synthesize {mode}"] = time.perf_counter() - t

    report.grid = str(_grid(out / "grid.png", real, real_labels, images, labels))
    with atomic_file(out / "report.json") as tmp:
        tmp.write_text(json.dumps(asdict(report), indent=2) + "\n")
    stage("grid+report", 1, 1)
    return report


def _grid(path: Path, real: torch.Tensor, real_labels: torch.Tensor, images: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> Path:
    """One row per class, labelled: real images | cc images | di images, enlarged so the shapes show."""
    from .synth.export import readable_scale, save_png, sheet

    cols = min(4, *(int((labels[m] == 0).sum()) for m in images))
    rows = []
    for k in range(len(DEMO_CLASSES)):
        parts = [list(real[real_labels == k][:cols])] + [list(images[m][labels[m] == k][:cols]) for m in ("cc", "di")]
        rows.append(parts[0] + [None] + parts[1] + [None] + parts[2])
    columns = [("real", cols), ("", 1), ("class-conditional (cc)", cols), ("", 1), ("DeepInversion (di)", cols)]
    grid = sheet(rows, row_labels=[c.name for c in DEMO_CLASSES], col_labels=columns, scale=readable_scale(real.shape[-1]), pad=2)
    return save_png(grid, path)
