"""What differential privacy costs and buys on CIFAR-10 Scenario A (docs/privacy.md), end to end.

    python studies/privacy_tradeoff.py [--out runs/privacy] [--per-class 8] [--iterations 600] [--audit-per-class 100] [--phase all]

1. One pass of cifar-resnet56 over the 50,000 training images through ``collect(..., dp_epsilon=8,
   dp_delta=1e-5)``, the function ``sowmeta collect --dp-epsilon 8 --dp-delta 1e-5`` calls: it writes
   the epsilon = 8 bundle. The same pass also keeps the exact moments (the epsilon = inf bundle) and
   the clipped sums, released again at epsilon 2, 1 and 0.5 by the same ``ClippedSums.release``
   (the noise is drawn once at the end, so the clipped pass is the same for every epsilon).
2. Scenario B (50 seeds per class) and C (1 per class) bundles from test images (``sowmeta collect --seeds``).
3. ``sowmeta synthesize`` (cifar preset, PER_CLASS images per class, ITERATIONS steps) from every
   Scenario-A bundle and the C bundle; ``sowmeta evaluate`` with cifar-resnet20 and per-class KID
   against 200 real test images per class (test images 300-499); ``sowmeta audit`` of every bundle (members:
   the first AUDIT_PER_CLASS training images per class, or the seeds; non-members: test images 200-299 of
   each class), with reconstruction judged by cifar-resnet20 for the synthesized ones.
4. results.json, a Markdown table and a plot (privacy-tradeoff.png) under OUT.

Every step is skipped when its output exists, so a stopped run continues. ``--phase`` runs one part
(bundles, membership audits, synthesis with its evaluation and reconstruction audit, summary);
once the bundles exist, the membership and synthesis phases may run side by side. Needs data/cifar10
(train/ and test/ extracted, studies/README.md) and the weights under $SOWMETA_SHARED (../shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("SOWMETA_SHARED", "../shared"))
W56 = SHARED / "models/cifar10/resnet56.safetensors"
W20 = SHARED / "models/cifar10/resnet20.safetensors"
DATA = Path("data/cifar10")
EPSILONS = [math.inf, 8.0, 2.0, 1.0, 0.5]
DELTA = 1e-5  # below 1/50,000
TIMES: dict[str, float] = {}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(step: str, *args: str) -> None:
    start = time.time()
    log(" ".join(args))
    subprocess.run(["sowmeta", *args], check=True)
    TIMES[step] = round(time.time() - start, 1)


def tag(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}"


def link_folder(out: Path, source: Path, start: int, stop: int) -> Path:
    """Class folders of links to files start:stop (by name) of each class of ``source``."""
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for cls in sorted(p for p in source.iterdir() if p.is_dir()):
        (tmp / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[start:stop]:
            (tmp / cls.name / f.name).symlink_to(f.resolve())
    tmp.rename(out)
    return out


def scenario_a(bundles: Path, data: Path) -> None:
    """One pass: the epsilon = 8 bundle by ``collect``, the exact and the other releases from the same pass."""
    if all((bundles / f"a-eps{tag(e)}").exists() for e in EPSILONS):
        return
    from dataclasses import replace

    import torch

    from sowmeta.bundle import Bundle
    from sowmeta.collectors import after_training, collect
    from sowmeta.collectors.private import PrivateRecorder
    from sowmeta.collectors.recorder import StatsRecorder
    from sowmeta.models import load_model
    from sowmeta.privacy.accountant import noise_multiplier

    class BothRecorder(PrivateRecorder):
        """Records the exact moments beside the clipped sums (the study's epsilon = inf bundle comes from the same pass)."""

        last: BothRecorder | None = None

        def allocate(self, channels, device="cpu"):  # noqa: ANN001
            StatsRecorder.allocate(self, channels, device)
            exact = self._joint, self._columns
            super().allocate(channels, device)
            self._joint, self._columns = exact
            BothRecorder.last = self

        def _flush(self):  # noqa: ANN202
            pending = list(self._pending)
            super()._flush()
            self._pending = pending
            StatsRecorder._flush(self)

    start = time.time()
    model = load_model("cifar-resnet56", weights=str(W56))
    after_training.PrivateRecorder = BothRecorder  # type: ignore[misc]
    try:
        b8, report = collect(model, data / "train", dp_epsilon=8.0, dp_delta=DELTA, dataset="cifar10", out=bundles / "a-eps8")
    finally:
        after_training.PrivateRecorder = PrivateRecorder  # type: ignore[misc]
    TIMES["collect 50k (one pass)"] = round(time.time() - start, 1)
    rec = BothRecorder.last
    taps = [t.tap for t in b8.manifest.taps]
    source = replace(b8.manifest.source, privacy=None)
    Bundle.from_moments(StatsRecorder.moments.fget(rec), taps, model=b8.manifest.model, preprocessing=b8.manifest.preprocessing,
                        source=source).save(bundles / "a-epsinf")
    for eps in EPSILONS[2:]:
        plan = replace(rec.plan, accounting=noise_multiplier(eps, DELTA))
        gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
        _, moments = rec.sums.release(plan.accounting.sigma, gen)
        Bundle.from_moments(moments, taps, model=b8.manifest.model, preprocessing=b8.manifest.preprocessing,
                            source=replace(b8.manifest.source, privacy=plan.record(rec.sums.sensitivity))).save(bundles / f"a-eps{tag(eps)}")


def _audit(out: Path, name: str, members: Path, non_members: Path, per_class: int, *, reconstruct: bool) -> None:
    """``sowmeta audit --json`` of one bundle: membership only (audit/NAME.json), or with reconstruction (audit/NAME-recon.json)."""
    audited = out / f"audit/{name}{'-recon' if reconstruct else ''}.json"
    if audited.exists():
        return
    extra = ["--synthesis", str(out / f"synth/{name}.h5"), "--judge", "cifar-resnet20", "--judge-weights", str(W20),
             "--pairs", str(out / f"audit/{name}-pairs.png")] if reconstruct else []
    with open(audited.with_suffix(".tmp"), "w") as f:
        start = time.time()
        subprocess.run(["sowmeta", "audit", str(out / f"bundles/{name}"), "--weights", str(W56), "--members", str(members), "--non-members",
                        str(non_members), "--limit-per-class", str(per_class), *extra, "--json"], check=True, stdout=f)
        TIMES[f"audit {name}{' with reconstruction' if reconstruct else ''}"] = round(time.time() - start, 1)
    audited.with_suffix(".tmp").rename(audited)


def _synthesize(out: Path, name: str, per_class: int, iterations: int, reference: Path) -> None:
    """``sowmeta synthesize`` from one bundle, then ``sowmeta evaluate --json`` with cifar-resnet20 and per-class KID."""
    h5 = out / f"synth/{name}.h5"
    if not h5.exists():
        run(f"synthesize {name}", "synthesize", "--bundle", str(out / f"bundles/{name}"), "--weights", str(W56), "--preset", "cifar",
            "--per-class", str(per_class), "--iterations", str(iterations), "--seed", "0", "--allow-low-confidence", "--out", str(h5), "-q")
    evaluated = out / f"eval/{name}.json"
    if not evaluated.exists():
        with open(evaluated.with_suffix(".tmp"), "w") as f:
            start = time.time()
            subprocess.run(["sowmeta", "evaluate", "--data", str(h5), "--model", "cifar-resnet20", "--weights", str(W20), "--reference", str(reference),
                            "--json"], check=True, stdout=f)
            TIMES[f"evaluate {name}"] = round(time.time() - start, 1)
        evaluated.with_suffix(".tmp").rename(evaluated)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/privacy"))
    ap.add_argument("--per-class", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--audit-per-class", type=int, default=100, help="members and non-members read per class by the audit")
    ap.add_argument("--data", type=Path, default=DATA, help="CIFAR-10 with train/ and test/ class folders")
    ap.add_argument("--phase", choices=("all", "bundles", "membership", "synthesis", "summary"), default="all",
                    help="run one phase (phases may run side by side once the bundles exist)")
    ap.add_argument("--only", nargs="*", default=None, help="the synthesis phase for these bundles only (a-eps8, c, ...), to run several side by side")
    args = ap.parse_args()
    out, data = args.out, args.data
    for d in ("bundles", "synth", "eval", "audit", "folders"):
        (out / d).mkdir(parents=True, exist_ok=True)
    seeds = {"b": link_folder(out / "folders/seeds-b", data / "test", 0, 50), "c": link_folder(out / "folders/seeds-c", data / "test", 0, 1)}
    reference = link_folder(out / "folders/reference", data / "test", 300, 500)
    non_members = link_folder(out / "folders/non-members", data / "test", 200, 300)
    scenario = [f"a-eps{tag(e)}" for e in EPSILONS]
    if args.phase in ("all", "bundles"):
        scenario_a(out / "bundles", data)
        for name, folder in seeds.items():
            if not (out / f"bundles/{name}").exists():
                run(f"collect {name}", "collect", "--model", "cifar-resnet56", "--weights", str(W56), "--seeds", str(folder), "--keep-rejected",
                    "--dataset", "cifar10-test", "--out", str(out / f"bundles/{name}"), "-q")
    if args.phase in ("all", "membership"):
        for name in [*scenario, "b", "c"]:
            _audit(out, name, seeds.get(name, data / "train"), non_members, args.audit_per_class, reconstruct=False)
    if args.phase in ("all", "synthesis"):
        for name in [n for n in [*scenario, "c"] if args.only is None or n in args.only]:
            _synthesize(out, name, args.per_class, args.iterations, reference)
            _audit(out, name, seeds.get(name, data / "train"), non_members, args.audit_per_class, reconstruct=True)
    summarize(out)


def _row(out: Path, name: str) -> dict | None:
    path = out / f"audit/{name}.json"
    if not path.exists():
        return None
    audit = json.loads(path.read_text())
    recon = out / f"audit/{name}-recon.json"
    row = {"bundle": name, "scenario": audit["scenario"], "images_per_class": audit["images_per_class"], "privacy": audit["privacy"],
           "membership": audit["membership"], "reconstruction": json.loads(recon.read_text())["reconstruction"] if recon.exists() else None}
    if (out / f"eval/{name}.json").exists():
        ev = json.loads((out / f"eval/{name}.json").read_text())
        row["resnet20_top1"] = ev["accuracy"][0]["top1"]
        cd = ev["class_distances"]
        row["kid_mean"], row["kid_real_mean"] = cd["mean_kid"], cd["mean_kid_real"]
    row["statistics_error"] = statistics_error(out, name)
    return row


def statistics_error(out: Path, name: str) -> tuple[float, float] | None:
    """How far a private bundle's rows are from the exact ones: the median over taps, classes and channels of
    |mean - exact mean| / exact std and of |var - exact var| / exact var."""
    import torch

    from sowmeta.bundle import Bundle

    exact_path = out / "bundles/a-epsinf"
    if not name.startswith("a-") or not exact_path.exists():
        return None
    exact, noisy = Bundle.load(exact_path), Bundle.load(out / f"bundles/{name}")
    mean_err, var_err = [], []
    for tap, s in exact.stats.items():
        v = s.var.double().clamp_min(1e-12)
        mean_err.append(((noisy.stats[tap].mean.double() - s.mean.double()).abs() / v.sqrt()).flatten())
        var_err.append(((noisy.stats[tap].var.double() - s.var.double()).abs() / v).flatten())
    return float(torch.cat(mean_err).median()), float(torch.cat(var_err).median())


def summarize(out: Path) -> None:
    """results.json, table.md and privacy-tradeoff.png from the step outputs."""
    rows = [r for n in [f"a-eps{tag(e)}" for e in EPSILONS] + ["b", "c"] if (r := _row(out, n)) is not None]
    times = json.loads((out / "times.json").read_text()) if (out / "times.json").exists() else {}
    times.update(TIMES)
    (out / "times.json").write_text(json.dumps(times, indent=1))
    TIMES.clear()
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    lines = ["| bundle | epsilon | images/class | error of means / variances (median) | resnet20 top-1 | per-class KID (real floor) | membership advantage (chance 95 %) | AUC | DP bound "
             "| nearest member / non-member (r20 features) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, p, rec = r["membership"], r["privacy"], r["reconstruction"]
        eps = f"{p['epsilon']:g}" if p else "inf"
        acc = f"{100 * r['resnet20_top1']:.1f} %" if "resnet20_top1" in r else "-"
        kid = f"{r['kid_mean']:.4f} ({r['kid_real_mean']:.4f})" if r.get("kid_mean") is not None else "-"
        bound = f"{m['bound']:.3f}" if m["bound"] is not None else "-"
        near = f"{rec['feature_member']:.2f} / {rec['feature_non_member']:.2f}" if rec else "-"
        err = r.get("statistics_error")
        err_text = f"{err[0]:.4f} / {err[1]:.4f}" if err else "-"
        lines.append(f"| {r['bundle']} | {eps} | {r['images_per_class']:,.0f} | {err_text} | {acc} | {kid} | {m['advantage']:.3f} ({m['chance']:.3f}) | {m['auc']:.3f} "
                     f"| {bound} | {near} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, out / "privacy-tradeoff.png")


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy and membership advantage against epsilon (inf drawn at the right), drawn with PIL."""
    from PIL import Image, ImageDraw

    a = [r for r in rows if r["bundle"].startswith("a-")]
    if len(a) < 2:
        return
    a.sort(key=lambda r: r["privacy"]["epsilon"] if r["privacy"] else 1e9)
    w, h, left, top, right, bottom = 640, 360, 60, 30, 20, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    xs = [left + i * (w - left - right) / (len(a) - 1) for i in range(len(a))]

    def y(v: float) -> float:
        return top + (1 - v) * (h - top - bottom)

    d.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black")
    for v in (0, 0.25, 0.5, 0.75, 1):
        d.text((10, y(v) - 6), f"{v:.2f}", fill="black")
        d.line([(left - 4, y(v)), (left, y(v))], fill="black")
    for x, r in zip(xs, a):
        d.text((x - 12, h - bottom + 8), f"eps {r['privacy']['epsilon']:g}" if r["privacy"] else "eps inf", fill="black")
    series = [("resnet20 top-1", "tab:blue", "#1f77b4", [r.get("resnet20_top1") for r in a]),
              ("membership advantage", "tab:red", "#d62728", [r["membership"]["advantage"] for r in a]),
              ("DP bound on advantage", "grey", "#7f7f7f", [r["membership"]["bound"] if r["membership"]["bound"] is not None else 1 for r in a]),
              ("chance level (95 %)", "pink", "#f4a6a6", [r["membership"]["chance"] for r in a])]
    for i, (label, _, colour, values) in enumerate(series):
        pts = [(x, y(v)) for x, v in zip(xs, values) if v is not None]  # scores of a set not synthesized yet are left out
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for px, py in pts:
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        d.text((left + 10 + 150 * i, 8), label, fill=colour)
    img.save(path)


if __name__ == "__main__":
    main()
