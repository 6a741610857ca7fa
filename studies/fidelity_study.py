"""The fidelity study: synthesis settings on all ten CIFAR-10 classes, scored by independent judges.

Run: python studies/fidelity_study.py --bundle runs/bundles/c56-a --real data/cifar10/test --out runs/study \\
        --judge cifar-resnet20 'preset:{}' 'it1000:{"iterations": 1000}' 'zoom:{"zoom": 0.5}' ...

Each probe is NAME:JSON, overrides of ``SynthConfig.cifar()`` (plus ``"per_class"`` to change the
count). cifar-resnet56 synthesizes ``--per-class`` images of every class into OUT/NAME.h5 (kept:
a second run reuses it, so probes can be re-judged; an interrupted one resumes), and every ``--judge`` scores them with
``sowmeta.evaluation.evaluate`` against the real test images: its top-1 (and on as many real
images), the mean per-class KID in its penultimate features against the rest of the test set
(and the same for as many held-out real images: the floor), and the within-class diversity
(and the real images'). OUT/NAME.png is a labelled grid, OUT/NAME.json every number.
Tune with one judge, report with another: pass only the tuning judge while searching.
Prints one markdown table row per probe and judge.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sowmeta import SynthConfig, load_model, synthesize
from sowmeta.env import shared_dir
from sowmeta.evaluation import evaluate
from sowmeta.models import CIFAR10_LABELS
from sowmeta.data.export import contact_sheet, readable_scale, save_png
from sowmeta.data.image_sets import load_images

JUDGES = {  # name -> weights (relative to the shared models folder, or a path)
    "cifar-resnet20": "resnet20.safetensors",
    "cifar-vgg": "runs/judges/cifar-vgg.safetensors",
}


def judge(name: str, models: Path) -> object:
    """``NAME`` or ``NAME=WEIGHTS``: a judge network."""
    name, _, weights = name.partition("=")
    weights = weights or JUDGES[name]
    path = Path(weights) if Path(weights).exists() else models / weights
    return load_model(name, weights=str(path))


def synthesize_probe(name: str, overrides: dict, args: argparse.Namespace, teacher: object) -> tuple[Path, float]:
    """OUT/NAME.h5 (synthesized now unless it exists) and the seconds its synthesis took."""
    out = args.out / f"{name}.h5"
    meta = args.out / f"{name}.synth.json"
    if out.exists() and meta.exists():
        return out, json.loads(meta.read_text())["seconds"]
    overrides = dict(overrides)
    per_class = overrides.pop("per_class", args.per_class)
    config = SynthConfig.cifar(**{"iterations": args.iterations, "seed": args.seed, **overrides})
    start = time.perf_counter()
    result = synthesize(args.bundle, teacher, per_class=per_class, config=config, out=out)  # resumes OUT/NAME.h5.partial
    seconds = time.perf_counter() - start
    meta.write_text(json.dumps({"seconds": seconds, "config": config.to_dict(), "per_class": per_class, "teacher_top1": result.teacher_accuracy}))
    images, labels = load_images(out)
    save_png(contact_sheet(images, labels, per_class=min(8, per_class), names=list(CIFAR10_LABELS), scale=readable_scale(32, 64)),
             args.out / f"{name}.png")
    return out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probes", nargs="+", help="NAME:JSON overrides of SynthConfig.cifar()")
    ap.add_argument("--bundle", required=True, help="Scenario-A bundle of cifar-resnet56")
    ap.add_argument("--real", type=Path, required=True, help="real test images, class-per-folder")
    ap.add_argument("--out", type=Path, default=Path("runs/study"))
    ap.add_argument("--judge", action="append", required=True, help="NAME or NAME=WEIGHTS; repeatable")
    ap.add_argument("--per-class", type=int, default=12)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kid-subsets", type=int, default=50)
    ap.add_argument("--models", type=Path, default=shared_dir() / "models" / "cifar10")
    ap.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    teacher = load_model("cifar-resnet56", weights=str(args.models / "resnet56.safetensors"))
    judges = [judge(j, args.models) for j in args.judge]
    print("| probe | overrides | judge | teacher top-1 | judge top-1 (real) | per-class KID (real floor) | diversity (real) | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for probe in args.probes:
        name, _, text = probe.partition(":")
        overrides = json.loads(text) if text else {}
        path, seconds = synthesize_probe(name, overrides, args, teacher)
        teacher_top1 = json.loads((args.out / f"{name}.synth.json").read_text())["teacher_top1"]
        for j in judges:
            r = evaluate(path, [j], reference=args.real, feature_model=j, kid_subsets=args.kid_subsets, seed=args.seed)
            a, c, d = r.accuracy[0], r.class_distances, r.diversity
            row = {
                "probe": name, "overrides": overrides, "judge": j.name, "images": r.images, "teacher_top1": teacher_top1,
                "top1": a.top1, "real_top1": a.real_top1, "per_class_top1": a.per_class,
                "kid": c.mean_kid, "kid_real": c.mean_kid_real, "per_class_kid": c.kid, "per_class_kid_real": c.kid_real,
                "fd": c.mean_frechet, "fd_real": c.mean_frechet_real,
                "diversity": d.mean, "diversity_real": d.reference_mean, "seconds": seconds,
            }
            (args.out / f"{name}.{j.name}.json").write_text(json.dumps(row, indent=1))
            print(
                f"| {name} | `{json.dumps(overrides)}` | {j.name} | {teacher_top1:.1%} | {a.top1:.1%} ({a.real_top1:.1%}) "
                f"| {c.mean_kid:.4f} ({c.mean_kid_real:.4f}) | {d.mean:.3f} ({d.reference_mean:.3f}) | {seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
