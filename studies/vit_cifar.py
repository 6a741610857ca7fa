"""A LayerNorm network end to end: train cifar-vit on CIFAR-10, record its bundle during training, synthesize, judge.

Scenario A during training. One command, from the repository root:

    python studies/vit_cifar.py            # all stages; outputs under runs/vit/

Stages (``--stages``, comma-separated, default all; each one skips work whose output exists):

* ``train``: cifar-vit (sowmeta/models/networks.py, CifarViT) from scratch on the 50,000 JPEG
  training images (decoded once into memory; class index = alphabetical folder order), random
  crop + flip, label smoothing, AdamW with linear warmup then cosine decay (torch.optim.lr_scheduler).
  In the last epoch ``TrainingCollector``s record four bundles at once: taps ``ln-inputs`` and
  ``block-outputs``, each with the class token in (``prefix_tokens=0``) and out (``=1``). Writes
  ``cifar-vit.safetensors`` (atomically) and ``bundles/<taps>-cls-<in|out>/``. Resumes from the
  last finished epoch (``train-state.pt``).
* ``push``: pushes the default bundle (``--taps``/``--class-token``) to the local registry
  ``runs/vit/registry`` as ``me/cifar-vit``.
* ``probe``: short synthesis probes on three classes (``--probe-classes``) over the four bundles and
  a few settings, scored by the tuning judge only (``--tune-judge``); ``probes.jsonl``.
* ``synth``: cc and global images of all ten classes from the pulled name ``me/cifar-vit``
  (``--per-class`` each), with the chosen settings; ``synth/{cc,global}.h5``.
* ``eval``: the ViT's own test accuracy (10,000 JPEG test images), and for each set: teacher
  top-1, independent top-1 with cifar-resnet20 and (if its weights exist) cifar-vgg, per-class
  FD and KID against real test images of the class in each judge's penultimate features, with
  equal-size sets and the real-against-real floor; ``eval.json``, ``eval.md`` and the grid
  ``grid.png`` (real | cc | global, one row per class).

The last line is ``RESULT ...`` with the headline numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sowmeta.collectors import TrainingCollector
from sowmeta.env import shared_dir
from sowmeta.models import CIFAR10_LABELS, LoadedModel, load_model

from train_judge import Normalize, augment, decode_zip, save_atomic, top1  # studies/ is on sys.path when a script here runs

ARCH = "cifar-vit"
NAME = "me/cifar-vit"
# the four bundles recorded in the last epoch: (taps preset, prefix tokens)
VARIANTS = {"ln-inputs-cls-in": ("ln-inputs", 0), "ln-inputs-cls-out": ("ln-inputs", 1),
            "block-outputs-cls-in": ("block-outputs", 0), "block-outputs-cls-out": ("block-outputs", 1)}
STAGES = ("train", "push", "probe", "synth", "eval")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------- data


class Data:
    """The CIFAR-10 JPEG sets, decoded once (uint8 N x 3 x 32 x 32), and the lossless test head."""

    def __init__(self, shared: Path, *, train: bool) -> None:
        folder = shared / "data" / "cifar10"
        start = time.perf_counter()
        self.x_train, self.y_train = decode_zip(folder / "train.zip", "train") if train else (None, None)
        self.x_test, self.y_test = decode_zip(folder / "test.zip", "test")
        with np.load(folder / "test-lossless-head.npz") as npz:
            self.x_ll, self.y_ll = torch.from_numpy(npz["x"]), torch.from_numpy(npz["y"]).long()
        log(f"decoded {0 if self.x_train is None else len(self.x_train)} train and {len(self.x_test)} test JPEGs "
            f"in {time.perf_counter() - start:.0f} s")


# --------------------------------------------------------------------------------------------- train


def schedule(opt: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup over ``warmup`` steps from 1 % of the peak, then cosine decay to 1 % over the rest (per step)."""
    lr = opt.param_groups[0]["lr"]
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=lr * 0.01)
    return torch.optim.lr_scheduler.SequentialLR(opt, [warm, cosine], milestones=[warmup])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on biases, LayerNorm weights, the class token or position embeddings)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n not in ("cls_token", "pos_embed")]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n not in ("cls_token", "pos_embed"))]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def train(args: argparse.Namespace, data: Data) -> dict[str, Any]:
    """Train cifar-vit; in the last epoch record the four bundles with TrainingCollector. Returns the training record."""
    out: Path = args.out
    weights = out / "cifar-vit.safetensors"
    record_path = out / "train.json"
    if weights.exists() and record_path.exists() and all((out / "bundles" / v / "sowmeta.json").exists() for v in VARIANTS):
        log(f"{weights} and the bundles exist; skipping training")
        return json.loads(record_path.read_text())
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    loaded = load_model(ARCH, weights="none")
    model = loaded.module.train()
    norm = Normalize(loaded)
    steps = len(data.x_train) // args.batch_size  # every batch full: equal weight per step
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999))
    sched = schedule(opt, args.warmup_epochs * steps, args.epochs * steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    state_path = out / "train-state.pt"
    history: list[dict[str, float]] = []
    first = 1
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        history = json.loads(state["history"])
        first = int(state["epoch"]) + 1
        log(f"resumed after epoch {first - 1}")
    params = sum(p.numel() for p in model.parameters())
    log(f"{ARCH}: {params:,} parameters; {args.epochs} epochs of {steps} steps of {args.batch_size}; {torch.get_num_threads()} threads")
    collectors: dict[str, TrainingCollector] = {}
    for epoch in range(first, args.epochs + 1):
        t0 = time.perf_counter()
        if epoch == args.epochs:  # the last epoch: the weights have settled; record the statistics
            collectors = {v: TrainingCollector(model, num_classes=10, taps=t, prefix_tokens=p) for v, (t, p) in VARIANTS.items()}
        perm = torch.randperm(len(data.x_train), generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(steps):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            x, y = norm(augment(data.x_train[idx], gen)), data.y_train[idx]
            with observing(collectors, y):
                logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            if i % 100 == 0:
                log(f"  epoch {epoch} step {i}/{steps} loss {loss.item():.3f} lr {sched.get_last_lr()[0]:.2e}")
        seen = steps * args.batch_size
        row = {"epoch": epoch, "loss": loss_sum / seen, "train_top1": correct / seen,
               "lossless_top1": top1(model, norm, data.x_ll, data.y_ll), "seconds": time.perf_counter() - t0}
        model.train()
        history.append(row)
        log(f"epoch {epoch}/{args.epochs} loss {row['loss']:.4f} train_top1 {row['train_top1']:.4f} "
            f"lossless_top1 {row['lossless_top1']:.4f} seconds {row['seconds']:.0f}")
        if epoch < args.epochs:
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(),
                     "rng": torch.get_rng_state(), "history": json.dumps(history), "epoch": epoch}
            tmp = state_path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, state_path)

    model.eval()
    acc = top1(model, norm, data.x_test, data.y_test)
    acc_ll = top1(model, norm, data.x_ll, data.y_ll)
    meta = {"arch": ARCH, "epochs": str(args.epochs), "seed": str(args.seed), "test_jpeg_top1": f"{acc:.4f}", "test_lossless_top1": f"{acc_ll:.4f}"}
    save_atomic(model.state_dict(), weights, meta)
    for variant, collector in collectors.items():
        bundle = collector.to_bundle(architecture=ARCH, labels=list(CIFAR10_LABELS), preprocessing=loaded.preprocessing, weights=weights.name,
                                     data="CIFAR-10 training JPEGs, last epoch (random crop + flip)")
        bundle.save(out / "bundles" / variant, overwrite=True)
    back = load_model(ARCH, weights=str(weights))
    if top1(back.module, Normalize(back), data.x_ll, data.y_ll) != acc_ll:
        raise SystemExit(f"{weights} does not load back to the same model")
    record = {"parameters": params, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seconds": sum(h["seconds"] for h in history),
              "test_jpeg_top1": acc, "test_lossless_top1": acc_ll, "history": history, "threads": torch.get_num_threads()}
    save_json(record, record_path)
    state_path.unlink(missing_ok=True)
    log(f"trained: JPEG test top-1 {acc:.4f}, lossless head {acc_ll:.4f}, {record['seconds'] / 60:.0f} min of epochs")
    return record


class observing:
    """Every collector observes this forward as belonging to ``labels`` (none before the last epoch)."""

    def __init__(self, collectors: dict[str, TrainingCollector], labels: torch.Tensor) -> None:
        from contextlib import ExitStack

        self.stack = ExitStack()
        self.collectors, self.labels = collectors, labels

    def __enter__(self) -> None:
        for c in self.collectors.values():
            self.stack.enter_context(c.observe(self.labels))

    def __exit__(self, *exc: object) -> None:
        self.stack.close()


def save_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- judges


JUDGES = {"cifar-resnet20": "models/cifar10/resnet20.safetensors", "cifar-vgg": "runs/judges/cifar-vgg.safetensors"}


def judge_weights(name: str, args: argparse.Namespace) -> Path:
    return args.shared / JUDGES[name] if name == "cifar-resnet20" else Path(JUDGES[name])


def judges(args: argparse.Namespace) -> dict[str, LoadedModel]:
    """The independent CNNs that score the images: cifar-resnet20 (shared weights) and cifar-vgg when its weights exist."""
    out = {}
    for name in JUDGES:
        w = judge_weights(name, args)
        if w.exists():
            out[name] = load_model(name, weights=str(w))
        else:
            log(f"judge {name}: no weights at {w}; left out")
    return out


class Scorer:
    """One judge's features of the real test images, and the scores of a set of images against them.

    Per class k with n images: FD and KID (cubic-kernel MMD², unbiased) between the set and n real
    test images of class k drawn at random, averaged over ``draws`` draws; the floor is the same
    with a disjoint draw of n other real images in place of the set (what real images score).
    """

    def __init__(self, judge: LoadedModel, data: Data, cache: Path, draws: int = 10) -> None:
        from sowmeta.evaluation.metrics import run_model

        self.judge, self.draws = judge, draws
        if cache.exists():
            saved = torch.load(cache, weights_only=True)
            self.feats, self.logits = saved["feats"], saved["logits"]
        else:
            out = run_model(judge, torch.utils.data.TensorDataset(data.x_test, data.y_test), features=True)
            self.feats, self.logits = out.features, out.logits
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"feats": self.feats, "logits": self.logits}, cache)
        self.labels = data.y_test

    def real_top1(self) -> float:
        return float((self.logits.argmax(1) == self.labels).double().mean())

    def score(self, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0) -> dict[str, Any]:
        """Top-1 of the judge on ``images`` (uint8) and per-class FD/KID against real images, with the real floor."""
        from sowmeta.evaluation.metrics import frechet_distance, kernel_distance, run_model

        out = run_model(self.judge, torch.utils.data.TensorDataset(images, labels), features=True)
        g = torch.Generator().manual_seed(seed)
        per_class: dict[str, dict[str, float]] = {}
        for k in sorted({int(v) for v in labels.tolist()}):
            mine = out.features[labels == k]
            real = self.feats[self.labels == k]
            n = len(mine)
            fd, kid, fd0, kid0 = [], [], [], []
            for _ in range(self.draws):
                order = torch.randperm(len(real), generator=g)
                ref, other = real[order[:n]], real[order[n : 2 * n]]
                fd.append(frechet_distance(ref, mine))
                fd0.append(frechet_distance(ref, other))
                kid.append(kernel_distance(ref, mine, subsets=1, subset_size=n)[0])
                kid0.append(kernel_distance(ref, other, subsets=1, subset_size=n)[0])
            per_class[CIFAR10_LABELS[k]] = {"fd": float(np.mean(fd)), "kid": float(np.mean(kid)), "fd_floor": float(np.mean(fd0)),
                                            "kid_floor": float(np.mean(kid0)), "n": n}
        mean = {m: float(np.mean([c[m] for c in per_class.values()])) for m in ("fd", "kid", "fd_floor", "kid_floor")}
        return {"judge": self.judge.name, "top1": float((out.logits.argmax(1) == labels).double().mean()), **mean, "per_class": per_class}


def roughness(x: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels of uint8 images, in [0, 1] units."""
    x = x.float() / 255
    return float(((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()) / 2)


# --------------------------------------------------------------------------------------------- synthesis

# what every probe starts from (overrides of SynthConfig.cifar(); --probe-iterations replaces the iterations)
PROBE_BASE: dict[str, Any] = {"iterations": 1000, "batch_size": 16, "alpha_tv": 0.1}
# probes: name -> (bundle variant, overrides of PROBE_BASE); scores in docs/results.md, section 6
PROBES: dict[str, tuple[str, dict[str, Any]]] = {
    "ln-cls-out": ("ln-inputs-cls-out", {}),
    "ln-cls-in": ("ln-inputs-cls-in", {}),
    "blocks-cls-out": ("block-outputs-cls-out", {}),
    "blocks-cls-in": ("block-outputs-cls-in", {}),
    # Plug-In Inversion's augmentations (random resized crop, colour shifts), then a weaker TV, then the Fourier image
    "ln-zoom-color": ("ln-inputs-cls-out", {"zoom": 0.3, "color_shift": 0.3}),
    "ln-zoom-color-tv01": ("ln-inputs-cls-out", {"zoom": 0.3, "color_shift": 0.3, "alpha_tv": 0.01}),
    "ln-fourier-zoom-color": ("ln-inputs-cls-out", {"zoom": 0.3, "color_shift": 0.3, "param": "fourier", "lr": 0.05}),
}
# the chosen setting: the best probe by the tuning judge (ln-zoom-color-tv01; the bundle: --taps ln-inputs --class-token out)
CHOSEN: dict[str, Any] = {**PROBE_BASE, **PROBES["ln-zoom-color-tv01"][1]}


def vit(args: argparse.Namespace) -> LoadedModel:
    return load_model(ARCH, weights=str(args.out / "cifar-vit.safetensors"))


def probe(args: argparse.Namespace, data: Data, specs: list[str]) -> None:
    """Short runs on ``--probe-classes``, scored by the tuning judge only; one JSON file per probe under probes/."""
    from sowmeta.synth import SynthConfig, synthesize

    model = vit(args)
    judge = judges(args)[args.tune_judge]
    scorer = Scorer(judge, data, args.out / f"real-features-{args.tune_judge}.pt")
    classes = [int(c) for c in args.probe_classes.split(",")]
    rough_real = roughness(data.x_test[torch.isin(data.y_test, torch.tensor(classes))])
    for spec in specs:
        name, variant, overrides = parse_probe(spec)
        path = args.out / "probes" / f"{name}.json"
        if path.exists():
            log(f"probe {name}: done before ({path})")
            continue
        config = SynthConfig.cifar(**{**PROBE_BASE, "iterations": args.probe_iterations, **overrides, "seed": args.seed})
        start = time.perf_counter()
        result = synthesize(args.out / "bundles" / variant, model, classes=classes, per_class=args.probe_per_class, config=config)
        seconds = time.perf_counter() - start
        scores = scorer.score(result.uint8, result.labels)
        row = {"name": name, "bundle": variant, "overrides": overrides, "config": config.to_dict(), "teacher_top1": result.teacher_accuracy,
               "roughness": roughness(result.uint8), "real_roughness": rough_real, "seconds": seconds, "tune_judge": scores}
        save_json(row, path)
        save_grid(args.out / "probes" / f"{name}.png", [(name, result.uint8, result.labels)], classes, 16)
        log(f"probe {name}: teacher {result.teacher_accuracy:.0%} {args.tune_judge} {scores['top1']:.0%} FD {scores['fd']:.2f} "
            f"(floor {scores['fd_floor']:.2f}) KID {scores['kid']:.3f} (floor {scores['kid_floor']:.3f}) rough {row['roughness']:.3f} {seconds:.0f} s")


def parse_probe(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``NAME`` (one of PROBES) or ``NAME:VARIANT:JSON`` (a bundle variant and overrides of SynthConfig.cifar())."""
    if spec in PROBES:
        return (spec, *PROBES[spec])
    name, variant, text = spec.split(":", 2)
    if variant not in VARIANTS:
        raise SystemExit(f"probe {spec!r}: the bundle variant must be one of {', '.join(VARIANTS)}")
    return name, variant, json.loads(text or "{}")


def push(args: argparse.Namespace) -> None:
    from sowmeta.registry import push as push_bundle

    variant = f"{args.taps}-cls-{args.class_token}"
    result = push_bundle(args.out / "bundles" / variant, NAME, registry=args.out / "registry")
    log(f"pushed {variant} as {NAME} to {args.out / 'registry'}: {result}")


def synth(args: argparse.Namespace, modes: list[str]) -> None:
    """cc and global images of every class from the pulled name me/cifar-vit, with the chosen settings."""
    from sowmeta.registry import pull
    from sowmeta.synth import SynthConfig, synthesize

    pulled = pull(NAME, registry=args.out / "registry")
    log(f"pulled {NAME}: {pulled}")
    model = vit(args)
    overrides = {**CHOSEN, **json.loads(args.synth_config or "{}")}
    for mode in modes:
        out = args.out / "synth" / f"{mode}.h5"
        if out.exists():
            log(f"{out} exists; skipping")
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        config = SynthConfig.cifar(**{**overrides, "mode": mode, "seed": args.seed})
        log(f"synthesizing {mode}: {args.per_class} per class, {json.dumps(overrides)}")
        start = time.perf_counter()
        result = synthesize(NAME, model, registry=args.out / "registry", per_class=args.per_class, config=config, out=out)
        save_json({"mode": mode, "seconds": time.perf_counter() - start, "teacher_top1": result.teacher_accuracy, "config": config.to_dict()},
                  out.with_suffix(".json"))
        log(f"{mode}: teacher top-1 {result.teacher_accuracy:.1%} in {time.perf_counter() - start:.0f} s")


def save_grid(path: Path, sets: list[tuple[str, torch.Tensor, torch.Tensor]], classes: list[int], per_row: int) -> None:
    """The sets side by side (labelled columns), one labelled row per class, enlarged twice; a sowmeta PNG."""
    from sowmeta.data.export import save_png, sheet

    rows = []
    for k in classes:
        row: list[torch.Tensor | None] = []
        for i, (_, images, labels) in enumerate(sets):
            mine = list(images[labels == k][:per_row])
            row += ([None] if i else []) + mine + [None] * (per_row - len(mine))
        rows.append(row)
    columns = [c for i, (name, _, _) in enumerate(sets) for c in ([("", 1)] if i else []) + [(name, per_row)]]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(sheet(rows, row_labels=[CIFAR10_LABELS[k] for k in classes], col_labels=columns, scale=2), path)


def evaluate(args: argparse.Namespace, data: Data) -> dict[str, Any]:
    """The ViT's test accuracy; both sets scored by every judge; eval.json, eval.md and grid.png."""
    from sowmeta.data.image_sets import load_images

    model = vit(args)
    norm = Normalize(model)
    record: dict[str, Any] = {"vit_test_jpeg_top1": top1(model.module, norm, data.x_test, data.y_test),
                              "vit_test_lossless_top1": top1(model.module, norm, data.x_ll, data.y_ll), "judges": {}, "sets": {}}
    sets = {mode: load_images(args.out / "synth" / f"{mode}.h5") for mode in ("cc", "global")}
    for name, judge in judges(args).items():
        scorer = Scorer(judge, data, args.out / f"real-features-{name}.pt")
        record["judges"][name] = {"real_test_top1": scorer.real_top1(), "held_out": name != args.tune_judge}
        for mode, (x, y) in sets.items():
            record["sets"].setdefault(mode, {"images": len(y), "roughness": roughness(x)})[name] = scorer.score(x, y, seed=args.seed)
    for mode in sets:
        info = json.loads((args.out / "synth" / f"{mode}.json").read_text())
        record["sets"][mode]["teacher_top1"] = info["teacher_top1"]
        record["sets"][mode]["seconds"] = info["seconds"]
    record["real_roughness"] = roughness(data.x_test)
    save_json(record, args.out / "eval.json")
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.cat([torch.nonzero(data.y_test == k).flatten()[torch.randperm(1000, generator=g)[:6]] for k in range(10)])
    grid = [("real", data.x_test[pick], data.y_test[pick])] + [(mode, x, y) for mode, (x, y) in sets.items()]
    save_grid(args.out / "grid.png", grid, list(range(10)), 6)
    (args.out / "eval.md").write_text(markdown(record))
    print(markdown(record))
    return record


def markdown(r: dict[str, Any]) -> str:
    """The cc vs global table (both judges, floors) and the per-class FD table."""
    names = list(r["judges"])
    lines = [f"ViT test top-1: {r['vit_test_jpeg_top1']:.1%} (10,000 JPEG test images), {r['vit_test_lossless_top1']:.1%} (846 lossless)", ""]
    head = "| set | images | teacher (cifar-vit) top-1 | " + " | ".join(
        f"{n} top-1 | {n} mean class FD | {n} mean class KID" for n in names) + " | roughness |"
    lines += [head, "|" + "---|" * (3 + 3 * len(names) + 1)]
    for mode, s in r["sets"].items():
        cells = " | ".join(f"{s[n]['top1']:.1%} | {s[n]['fd']:.2f} | {s[n]['kid']:.3f}" for n in names)
        lines.append(f"| {mode} | {s['images']} | {s['teacher_top1']:.1%} | {cells} | {s['roughness']:.3f} |")
    any_set = next(iter(r["sets"].values()))
    floor = " | ".join(f"{r['judges'][n]['real_test_top1']:.1%} | {any_set[n]['fd_floor']:.2f} | {any_set[n]['kid_floor']:.3f}" for n in names)
    lines.append(f"| real test images (floor) | {any_set[names[0]]['per_class']['airplane']['n']} per class | {r['vit_test_jpeg_top1']:.1%} | {floor} | {r['real_roughness']:.3f} |")
    for n in names:
        lines += ["", f"Per-class FD in {n} features (floor: real against real, same sizes):", "",
                  "| set | " + " | ".join(CIFAR10_LABELS) + " |", "|---|" + "---|" * 10]
        for mode, s in r["sets"].items():
            lines.append(f"| {mode} | " + " | ".join(f"{s[n]['per_class'][c]['fd']:.1f}" for c in CIFAR10_LABELS) + " |")
        lines.append("| real (floor) | " + " | ".join(f"{any_set[n]['per_class'][c]['fd_floor']:.1f}" for c in CIFAR10_LABELS) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    ap.add_argument("--shared", type=Path, default=shared_dir(), help="the shared data folder (SOWMETA_SHARED)")
    ap.add_argument("--out", type=Path, default=Path("runs/vit"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 was fastest on the shared, busy 2-core machine)")
    g = ap.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=8)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    g.add_argument("--warmup-epochs", type=int, default=1)
    g.add_argument("--weight-decay", type=float, default=0.05)
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping")
    g.add_argument("--train-limit", type=int, default=0, help="use only N random training images (smoke tests; 0: all)")
    g = ap.add_argument_group("bundle, synthesis and evaluation")
    g.add_argument("--taps", choices=("ln-inputs", "block-outputs"), default="ln-inputs", help="the bundle pushed as me/cifar-vit")
    g.add_argument("--class-token", choices=("in", "out"), default="out", help="class token among the positions of that bundle")
    g.add_argument("--per-class", type=int, default=16, help="images per class and mode")
    g.add_argument("--modes", default="cc,global")
    g.add_argument("--synth-config", help="JSON overrides of the chosen setting (CHOSEN)")
    g.add_argument("--tune-judge", default="cifar-vgg", choices=tuple(JUDGES), help="the judge the probes are scored by (the other is held out)")
    g.add_argument("--probe", action="append", help=f"NAME (of {', '.join(PROBES)}) or NAME:VARIANT:JSON; repeatable (default: all named)")
    g.add_argument("--probe-classes", default="1,3,8", help="automobile, cat, ship")
    g.add_argument("--probe-per-class", type=int, default=16)
    g.add_argument("--probe-iterations", type=int, default=500)
    args = ap.parse_args(argv)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = Data(args.shared, train="train" in args.stages)
    if args.train_limit and data.x_train is not None:
        keep = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(args.seed))[: args.train_limit]
        data.x_train, data.y_train = data.x_train[keep], data.y_train[keep]
    if "train" in args.stages:
        train(args, data)
    if "push" in args.stages:
        push(args)
    if "probe" in args.stages:
        probe(args, data, args.probe or list(PROBES))
    if "synth" in args.stages:
        synth(args, [m.strip() for m in args.modes.split(",") if m.strip()])
    if "eval" in args.stages:
        record = evaluate(args, data)
        parts = " ".join(f"{mode}_{n}_top1={s[n]['top1']:.4f} {mode}_{n}_fd={s[n]['fd']:.3f}" for mode, s in record["sets"].items() for n in record["judges"])
        print(f"RESULT vit_test_top1={record['vit_test_jpeg_top1']:.4f} {parts}")


if __name__ == "__main__":
    main()
