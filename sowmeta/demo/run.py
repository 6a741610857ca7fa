"""``sowmeta demo``: the whole idea, offline, on a laptop CPU in a few minutes.

1. a labelled dataset where every class has its own shape and its own background;
2. a small BatchNorm CNN trained on it while ``TrainingCollector`` records Scenario-A statistics;
3. the bundle published to a local registry and pulled back by name;
4. images of every class synthesized in cc and di modes, and in cc mode from sketches: each
   class's shape drawn as a black outline, white inside and grey around it (paper Sec. 4.2);
5. a side-by-side grid, a sketch grid (sketch, steps, result) and a report: teacher accuracy on
   the synthesized images, how far each mode's image borders (the background) are from the real
   class's, and how faithfully the images synthesized from sketches follow them.
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

from ..atomic import atomic_file
from ..errors import storage_errors
from ..outputs import DEMO_MARKER, require_replaceable
from ..collectors import TrainingCollector
from .data import DEMO_CLASSES, border_stats, make_demo_images, make_demo_outlines, make_demo_scenes
from ..models import load_model
from ..synth import SynthConfig, SynthProgress, synthesize

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
    sketch_per_class: int = 4
    iterations: int = 1000
    # The CIFAR preset, with less smoothing: the demo's images are flat colours and sharp edges.
    alpha_tv: float = 1e-3
    first_tap_multiplier: float = 1.0
    seed: int = 0
    # Grey levels of the paper inside and outside each outline before synthesis starts from it
    # (``sowmeta.synth.sketch.shade_enclosed``; None leaves that part white). A bare outline is the same
    # white on both sides of its line, and the object was painted anywhere; a white figure on a grey
    # ground (the demo's objects are brighter than their backgrounds) puts it inside the outline.
    # Chosen over (None, None), (0.5, None) and (1, 0.2) by edge overlap and inside contrast, quick size.
    sketch_shade: float | None = None
    sketch_ground: float | None = 0.35
    # CPU threads for the run (None: torch's default). The demo's tensors are tiny, so a second
    # thread buys little, while two threads on a 2-core machine busy with other work wait on each
    # other: measured there, a cc iteration took 160 ms with 2 threads and 40 ms with 1.
    threads: int | None = 1

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(train_per_class=160, test_per_class=40, epochs=3, synth_per_class=6, sketch_per_class=2, iterations=150)


@dataclass
class DemoReport:
    """The demo's measured numbers (also written to report.json)."""

    teacher_test_accuracy: float = 0.0
    accuracy: dict[str, float] = field(default_factory=dict)  # mode -> teacher top-1 on its images
    background_distance: dict[str, float] = field(default_factory=dict)  # mode -> mean over classes
    background_distance_per_class: dict[str, list[float]] = field(default_factory=dict)
    # sketch -> image: the fraction of the outline's edges within 1 px of the image's strongest edges
    # (sowmeta.sketch.edge_overlap), for the images started from the outlines and, as the chance
    # level, for the cc images of the same class started from noise
    sketch_edge_overlap: float = 0.0
    sketch_edge_overlap_noise: float = 0.0
    # where the object went: mean brightness inside the sketched shape minus outside it (the demo's
    # objects are bright on darker backgrounds, so > 0 means the object fills the outline), for the
    # images started from the sketches, the noise-started cc images paired with them, and real images
    sketch_inside_contrast: float = 0.0
    sketch_inside_contrast_noise: float = 0.0
    sketch_inside_contrast_real: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    registry_name: str = DEMO_NAME
    grid: str = ""
    sketch_grid: str = ""


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
    ``train``, ``registry``, ``synthesize cc``, ``synthesize di``, ``synthesize sketch`` and ``grid+report``.
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
    from ..registry import pull, push

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
            alpha_image_var=0.0,  # statistics recorded during training hold no image spread
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

    report.sketch_grid = str(_sketch_stage(out, cfg, device, pulled, loaded, images["cc"], labels["cc"], real, real_labels, report, stage))
    report.grid = str(_grid(out / "grid.png", real, real_labels, images, labels))
    with atomic_file(out / "report.json") as tmp:
        tmp.write_text(json.dumps(asdict(report), indent=2) + "\n")
    stage("grid+report", 1, 1)
    return report


def _sketch_stage(
    out: Path, cfg: DemoConfig, device: str, pulled: object, loaded: object, cc: torch.Tensor, cc_labels: torch.Tensor,
    real: torch.Tensor, real_labels: torch.Tensor, report: DemoReport, stage: Stage,
) -> Path:
    """Synthesize cc images started from each class's outline on a grey ground (no added noise); measure and draw them."""
    from ..synth.sketch import edge_overlap, shade_enclosed
    from ..data.export import save_png

    t = time.perf_counter()
    sketches, sketch_labels, masks = make_demo_outlines(cfg.sketch_per_class, seed=cfg.seed + 3)
    starts = shade_enclosed(sketches, shade=cfg.sketch_shade, ground=cfg.sketch_ground)
    folder = out / "sketches"
    for i, (img, k) in enumerate(zip(starts, sketch_labels.tolist())):
        save_png(img, folder / DEMO_CLASSES[k].name / f"{i:03d}.png")
    steps = -(-cfg.iterations // 4)  # three intermediate images and the result
    sc = SynthConfig.cifar(
        mode="cc", iterations=cfg.iterations, alpha_tv=cfg.alpha_tv, first_tap_multiplier=cfg.first_tap_multiplier, seed=cfg.seed,
        batch_size=cfg.sketch_per_class, init="images", init_noise=0.0, save_every=steps,
        alpha_image_var=0.0,  # statistics recorded during training hold no image spread
    )

    def progress(p: SynthProgress) -> None:
        if p.iteration is not None:
            stage("synthesize sketch", (p.batch - 1) * p.iteration.iterations + p.iteration.iteration, p.batches * p.iteration.iterations)

    result = synthesize(pulled, loaded, per_class=cfg.sketch_per_class, config=sc, out=out / "synth-sketch.h5", device=device,  # type: ignore[arg-type]
                        overwrite=True, init_images=folder, progress=progress)
    images = result.images()
    report.accuracy["sketch"] = result.teacher_accuracy
    report.sketch_edge_overlap = float(edge_overlap(sketches, images).mean())
    # the chance level: the same outlines against cc images of their class that started from noise
    paired = _pair_by_class(sketch_labels, cc, cc_labels)
    report.sketch_edge_overlap_noise = float(edge_overlap(sketches, paired).mean())
    report.sketch_inside_contrast = inside_contrast(images, masks)
    report.sketch_inside_contrast_noise = inside_contrast(paired, masks)
    real_images, _, real_masks = make_demo_scenes(cfg.sketch_per_class, seed=cfg.seed + 3)
    report.sketch_inside_contrast_real = inside_contrast(real_images, real_masks)
    per_class = _background_distance(images, result.labels, real, real_labels)
    report.background_distance_per_class["sketch"] = per_class
    report.background_distance["sketch"] = sum(per_class) / len(per_class)
    report.seconds["synthesize sketch"] = time.perf_counter() - t
    return _sketch_grid(out / "sketch-grid.png", starts, sketch_labels, images, result)


def inside_contrast(images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of (mean luma inside the mask - mean luma outside it); images N x 3 x H x W in [0, 1], masks N x H x W."""
    luma = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).float()
    m = masks.float()
    inside = (luma * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
    outside = (luma * (1 - m)).flatten(1).sum(1) / (1 - m).flatten(1).sum(1).clamp_min(1)
    return float((inside - outside).mean())


def _pair_by_class(labels: torch.Tensor, images: torch.Tensor, image_labels: torch.Tensor) -> torch.Tensor:
    """For the i-th item of class k in ``labels``, the i-th image of class k (cycling): one image per item."""
    seen: dict[int, int] = {}
    out = []
    for k in labels.tolist():
        mine = images[image_labels == k]
        out.append(mine[seen.get(k, 0) % len(mine)])
        seen[k] = seen.get(k, 0) + 1
    return torch.stack(out)


def _sketch_grid(path: Path, sketches: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, result: object) -> Path:
    """Per class: its first sketch, the intermediate images and the result (paper Fig. 6b), then the other sketch -> result pairs."""
    import h5py
    import numpy as np

    from ..data.export import readable_scale, save_png, sheet

    with h5py.File(result.path, "r") as f:  # type: ignore[attr-defined]
        snaps = torch.from_numpy(np.asarray(f["snapshots"][:])).permute(0, 1, 4, 2, 3) if "snapshots" in f else torch.zeros(0)
        steps = [int(i) for i in f["snapshots"].attrs["iterations"]] if "snapshots" in f else []
    rows = []
    per = int((labels == 0).sum())
    for k in range(len(DEMO_CLASSES)):
        idx = torch.nonzero(labels == k).flatten().tolist()
        first = idx[0]
        row: list[torch.Tensor | None] = [sketches[first], *[s[first] for s in snaps], images[first]]
        for i in idx[1:]:
            row += [None, sketches[i], images[i]]
        rows.append(row)
    columns = [("sketch", 1), *[(f"step {it}", 1) for it in steps], ("result", 1)]
    if per > 1:
        columns += [("", 1), ("more sketch -> result", 3 * (per - 1) - 1)]
    grid = sheet(rows, row_labels=[c.name for c in DEMO_CLASSES], col_labels=columns, scale=readable_scale(images.shape[-1]), pad=2)
    return save_png(grid, path)


def _grid(path: Path, real: torch.Tensor, real_labels: torch.Tensor, images: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> Path:
    """One row per class, labelled: real images | cc images | di images, enlarged so the shapes show."""
    from ..data.export import readable_scale, save_png, sheet

    cols = min(4, *(int((labels[m] == 0).sum()) for m in images))
    rows = []
    for k in range(len(DEMO_CLASSES)):
        parts = [list(real[real_labels == k][:cols])] + [list(images[m][labels[m] == k][:cols]) for m in ("cc", "di")]
        rows.append(parts[0] + [None] + parts[1] + [None] + parts[2])
    columns = [("real", cols), ("", 1), ("class-conditional (cc)", cols), ("", 1), ("DeepInversion (di)", cols)]
    grid = sheet(rows, row_labels=[c.name for c in DEMO_CLASSES], col_labels=columns, scale=readable_scale(real.shape[-1]), pad=2)
    return save_png(grid, path)
