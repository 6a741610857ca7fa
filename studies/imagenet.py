"""ImageNet at 224 px with a real network: the paper's Table 2, Figures 3 and 4, and the README grid, regenerated.

Run: ``python studies/imagenet.py --shared ../shared --out runs/imagenet [--size cpu] [--threads 1]``.
The teacher is EfficientNet-Lite0, the judge EfficientNet-Lite1 (never used for anything but judging);
the data are the 1,000 ImageNet photographs of ``../shared/data/imagenet-sample`` (one per class).

Stages, each kept under ``--out`` and skipped when its result is there (a cut-off run continues):

1. bundles: Scenario C from every photograph (``c``; the teacher recognises 883; ``--size tiny``: every
   twentieth), from the studied classes' photographs through the BatchNorm-fused teacher (``fc``; a class's
   statistics do not depend on the other classes'), and Scenario B from ``--views`` random resized crops with
   flips of each studied class's photograph (``b``, ``fb``: the few seeds a user can form from one photograph);
2. synthesis runs (``sowmeta.synthesize``, one image per class, classes mixed in batches of 8): the
   imagenet preset's defaults on the held-out classes (classes never used to tune the preset), and
   Table 2's rows on the first of them: cc (C, B), global, DeepInversion (di), the fused teacher's cc (C, B),
   and the paper's own setting (pixels, lr 0.25, for the preset's iterations) for comparison;
   Figure 4: four images of each of four classes in single-class batches;
3. judging: top-1 of the judge and of the teacher, and naturalness (high-frequency power fraction and
   total variation per pixel) against the same classes' photographs at 224 px; s/image of each run;
4. ``results.json``, ``table2.md`` and the PNGs ``figure3.png``, ``figure4.png``, ``grid.png`` (with the JPEG copies
   ``imagenet-*.jpg`` that docs/img holds).

``--size tiny`` (two classes, a few iterations) checks the script end to end in a few minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sowmeta  # noqa: E402
from sowmeta import Bundle, SynthConfig, collect_seeds, synthesize  # noqa: E402
from sowmeta.data.export import save_png, sheet  # noqa: E402
from sowmeta.data.folders import read_image  # noqa: E402
from sowmeta.data.image_sets import fit_square  # noqa: E402
from sowmeta.evaluation.naturalness import compare_naturalness  # noqa: E402
from sowmeta.models.fuse import fuse_bn  # noqa: E402

# Classes the preset was tuned on: never in a reported figure.
TUNED = {1, 130, 207, 340, 417, 717, 980, 948, 22, 99, 145, 309, 388, 409, 430, 292}
SIZES = {  # held-out classes, Table 2's classes, iterations, Figure 4's images per class
    "tiny": dict(held=2, table=2, iterations=4, fig4=2, photos=range(10, 1000, 20)),
    "cpu": dict(held=43, table=8, iterations=200, fig4=4),
    "gpu": dict(held=400, table=100, iterations=200, fig4=8),
}


@dataclass
class Study:
    shared: Path
    out: Path
    size: dict
    views: int
    device: str
    settings: dict  # SynthConfig fields every run shares (amp, batch size)
    models: dict = field(default_factory=dict)

    @property
    def photos(self) -> Path:
        return self.shared / "data/imagenet-sample"

    def model(self, name: str) -> sowmeta.LoadedModel:
        if name not in self.models:
            if name == "fused":
                m = copy.copy(self.model("lite0"))
                m.module = fuse_bn(copy.deepcopy(m.module), torch.rand(1, 3, 224, 224))
            else:
                m = sowmeta.load_model(f"timm:tf_efficientnet_{name}", weights=str(self.shared / f"models/imagenet/efficientnet-{name}.safetensors"))
            self.models[name] = m
        return self.models[name]

    def photo(self, k: int) -> Path:
        return sorted((self.photos / sorted(os.listdir(self.photos))[k]).iterdir())[0]


def seed_links(study: Study, classes: list[int] | None, into: Path) -> Path:
    """``into/<index>/<photo>``: links to the photographs of ``classes`` (all when None)."""
    for k in study.size.get("photos", range(1000)) if classes is None else classes:
        (into / str(k)).mkdir(parents=True, exist_ok=True)
        link = into / str(k) / study.photo(k).name
        if not link.exists():
            link.symlink_to(study.photo(k))
    return into


def seed_views(study: Study, classes: list[int], into: Path) -> Path:
    """``into/<index>/<view>.png``: ``study.views`` random resized crops (scale 0.25-1) with flips of each class's photograph."""
    crop = v2.Compose([v2.RandomResizedCrop(256, scale=(0.25, 1.0), antialias=True), v2.RandomHorizontalFlip()])
    torch.manual_seed(0)
    for k in classes:
        (into / str(k)).mkdir(parents=True, exist_ok=True)
        image = v2.functional.pil_to_tensor(read_image(study.photo(k)).convert("RGB"))
        for v in range(study.views):
            save_png(crop(image), into / str(k) / f"view{v}.png")
    return into


def bundle(study: Study, name: str, classes: list[int]) -> Path:
    """The bundle ``name`` (c, fc, b, fb), collected once."""
    path = study.out / "bundles" / name
    if name == "c16" and not (path / "sowmeta.json").exists():  # the same statistics stored in float16
        Bundle.load(bundle(study, "c", classes)).save(path, dtype="float16")
    if not (path / "sowmeta.json").exists():
        seeds = study.out / "seeds" / {"c": "photos", "fc": "studied-photos"}.get(name, "views")
        if not seeds.exists():
            tmp = seeds.with_suffix(".tmp")
            made = seed_views(study, classes, tmp) if "b" in name else seed_links(study, None if name == "c" else classes, tmp)
            made.rename(seeds)
        t = time.perf_counter()
        collect_seeds(study.model("lite0"), seeds, out=path, fuse=name.startswith("f"), device=study.device)
        print(f"bundle {name}: {time.perf_counter() - t:.0f} s", flush=True)
    return path


def kept_classes(study: Study) -> tuple[list[int], list[int]]:
    """The held-out classes (k = 10 mod 20, the teacher recognises their photograph, not tuned on) and Table 2's."""
    c = Bundle.load(bundle(study, "c", []), verify=False)
    counts = {k: int(c.counts[c.row(k)]) for k in c.classes}
    held = [k for k in range(10, 1000, 20) if counts[k] > 0 and k not in TUNED][: study.size["held"]]
    return held, held[: study.size["table"]]


def real_photos(study: Study, classes: list[int]) -> torch.Tensor:
    pp = study.model("lite0").preprocessing
    return torch.stack([fit_square(v2.functional.pil_to_tensor(read_image(study.photo(k)).convert("RGB")), pp.crop, resize=pp.resize)
                        for k in classes])


def judge(study: Study, name: str, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[int]]:
    m = study.model(name)
    pp = m.preprocessing
    x = torch.stack([fit_square(im, pp.crop, resize=pp.resize) for im in images]).float() / 255
    mean, std = torch.tensor(pp.mean).view(1, 3, 1, 1), torch.tensor(pp.std).view(1, 3, 1, 1)
    with torch.no_grad():
        pred = torch.cat([m.module.eval()((x[i:i + 16] - mean) / std).argmax(1) for i in range(0, len(x), 16)])
    return float((pred == labels).float().mean()), pred.tolist()


def run(study: Study, tag: str, bundle_name: str | None, classes: list[int], *, per_class: int = 1, fused: bool = False,
        preset: str = "imagenet", **overrides) -> dict:
    """One synthesis run, judged; its images and figures are kept as ``runs/<tag>.pt`` and ``results.json``."""
    done = study.out / "runs" / f"{tag}.pt"
    if done.exists():
        return torch.load(done)["row"]
    # the paper's own setting runs for the preset's iterations too (its 2,000 do not fit a CPU study)
    settings = {**dict(iterations=study.size["iterations"], mixed=True), **study.settings, **overrides}
    config = SynthConfig.preset(preset, **settings)
    path = None if bundle_name is None else bundle(study, bundle_name, classes)
    t = time.perf_counter()
    result = synthesize(path, study.model("fused" if fused else "lite0"), classes=classes, per_class=per_class, config=config, device=study.device)
    seconds = time.perf_counter() - t
    images, labels = result.uint8, result.labels
    lite1, pred1 = judge(study, "lite1", images, labels)
    lite0, _ = judge(study, "lite0", images, labels)
    score = compare_naturalness([images], [real_photos(study, classes)])
    row = dict(tag=tag, bundle=bundle_name, mode=config.mode, fused=fused, preset=preset, classes=len(classes), images=len(labels),
               iterations=config.iterations, lite1_top1=lite1, lite0_top1=lite0, hf_ratio=score.hf_ratio, tv_ratio=score.tv_ratio,
               s_per_image=seconds / len(labels), threads=torch.get_num_threads(), load=os.getloadavg()[0],
               misses=[(int(y), p) for y, p in zip(labels.tolist(), pred1) if y != p])
    done.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(row=row, images=images, labels=labels), done)
    print(json.dumps(row), flush=True)
    print(f"RESULT imagenet_{tag} lite1_top1={lite1:.4f} hf_ratio={row['hf_ratio']:.3f} tv_ratio={row['tv_ratio']:.3f} "
          f"s_per_image={row['s_per_image']:.3f} images={row['images']}", flush=True)
    return row


def images_of(study: Study, tag: str) -> tuple[torch.Tensor, torch.Tensor]:
    saved = torch.load(study.out / "runs" / f"{tag}.pt")
    return saved["images"], saved["labels"]


def figures(study: Study, table: list[int], fig4: list[int]) -> None:
    """Figure 3 (photograph | cc | fused cc, B | fused cc, C), Figure 4 (photograph -> images) and the README grid."""
    names = study.model("lite0").labels or [str(k) for k in range(1000)]
    shown = table[:8]
    columns = [real_photos(study, shown)]
    for tag in ("cc-C", "fused-cc-B", "fused-cc-C"):
        images, labels = images_of(study, tag)
        columns.append(torch.stack([images[labels == k][0] for k in shown]))
    rows = [[col[i] for col in columns] for i in range(len(shown))]
    save_png(sheet(rows, row_labels=[names[k] for k in shown], col_labels=[("photograph", 1), ("cc, C", 1), ("fused, B", 1), ("fused, C", 1)]),
             study.out / "figure3.png")
    images, labels = images_of(study, "figure4")
    photos = real_photos(study, fig4)
    rows = [[photos[i], *images[labels == k]] for i, k in enumerate(fig4)]
    save_png(sheet(rows, row_labels=[names[k] for k in fig4], col_labels=[("photograph", 1), ("synthesized", len(rows[0]) - 1)]),
             study.out / "figure4.png")
    images, labels = images_of(study, "defaults")
    grid = [list(images[i:i + 8]) for i in range(0, min(len(images), 16), 8)]
    save_png(sheet(grid), study.out / "grid.png")
    for name in ("figure3", "figure4", "grid"):  # what docs/ shows: JPEG copies a tenth of the size
        Image.open(study.out / f"{name}.png").convert("RGB").save(study.out / f"imagenet-{name}.jpg", quality=88)


def table2(rows: list[dict]) -> str:
    lines = ["| run | bundle | fused | classes | judge (Lite1) top-1 | teacher top-1 | high-freq. ratio | TV ratio | s/image |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tag']} | {r['bundle'] or 'model BN'} | {'yes' if r['fused'] else 'no'} | {r['classes']} | {100 * r['lite1_top1']:.1f} % | "
                     f"{100 * r['lite0_top1']:.1f} % | {r['hf_ratio']:.2f} | {r['tv_ratio']:.2f} | {r['s_per_image']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--out", type=Path, default=Path("runs/imagenet"))
    ap.add_argument("--size", choices=SIZES, default="cpu")
    ap.add_argument("--views", type=int, default=8, help="Scenario B: random crops of each class's photograph")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 is faster on a machine shared with other work)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast of every synthesis run (bf16 on a GPU)")
    ap.add_argument("--batch-size", type=int, default=8, help="images optimized together in the one-image-per-class runs")
    ap.add_argument("--only", default="", help="comma-separated run tags to do (default all)")
    a = ap.parse_args()
    if not (a.shared / "models/imagenet/efficientnet-lite0.safetensors").exists():
        sys.exit(f"error: no ImageNet models under {a.shared}; pass --shared DIR (the folder holding models/imagenet and data/imagenet-sample)")
    if a.threads:
        torch.set_num_threads(a.threads)
    study = Study(a.shared, a.out, SIZES[a.size], a.views, a.device, dict(amp=a.amp, batch_size=a.batch_size))
    held, table = kept_classes(study)
    fig4 = table[:4]
    only = set(filter(None, a.only.split(",")))
    plan = [
        ("defaults", "c", held, {}),
        ("cc-C", "c", table, {}),
        ("cc-C-float16", "c16", table, {}),
        ("cc-B", "b", table, {}),
        ("global-C", "c", table, dict(mode="global")),
        ("di", None, table, dict(mode="di")),
        ("fused-cc-C", "fc", table, dict(fused=True)),
        ("fused-cc-B", "fb", table, dict(fused=True)),
        ("paper-cc-C", "c", table, dict(preset="paper")),
        ("figure4", "c", fig4, dict(per_class=study.size["fig4"], mixed=False, batch_size=study.size["fig4"])),
    ]
    rows = [run(study, tag, b, classes, **kw) for tag, b, classes, kw in plan if not only or tag in only]
    if not only or "cc-C-float16" in only:  # what float16 storage changes: the same run's images against float32's
        f32, f16 = images_of(study, "cc-C")[0].float(), images_of(study, "cc-C-float16")[0].float()
        print(f"float16 against float32 statistics: mean |pixel difference| {(f32 - f16).abs().mean():.2f} of 255, "
              f"largest {(f32 - f16).abs().max():.0f}", flush=True)
    real = {}
    for what, classes in (("held", held), ("table", table)):
        labels = torch.tensor(classes)
        real[what] = {n: judge(study, n, real_photos(study, classes), labels)[0] for n in ("lite1", "lite0")}
    (a.out / "results.json").write_text(json.dumps(dict(runs=rows, real_photographs_top1=real, held=held, table=table), indent=1) + "\n")
    (a.out / "table2.md").write_text(table2(rows) + f"\nThe photographs themselves, same classes: Lite1 {100 * real['table']['lite1']:.1f} %, "
                                     f"Lite0 {100 * real['table']['lite0']:.1f} % (Table 2's); Lite1 {100 * real['held']['lite1']:.1f} % "
                                     f"(the {len(held)} held-out classes).\n")
    print((a.out / "table2.md").read_text())
    if not only:
        figures(study, table, fig4)


if __name__ == "__main__":
    main()
