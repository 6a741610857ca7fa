"""Slice loading: `Bundle.load(classes=[c])` of a ResNet-50-shaped 1000-class bundle against a full load.

Run: python benchmarks/slice_load.py            (writes a ~212 MB bundle of random statistics to a temp dir)

The bundle has torchvision resnet50's 53 BatchNorm-input taps (26,560 channels) and 1,000
classes. It is verified once before timing (so its files are remembered as verified, as after
a pull or an earlier load) and its files are in the OS page cache. Every load then runs in a
fresh Python process, as a program that needs one class would: time is the `Bundle.load` call
itself (its lazy imports included; the time of any garbage collection inside it is shown beside
it), memory is the peak resident set during the call minus the resident set just before it.
Each variant runs as the process's first load and after a small bundle was loaded; the variants
alternate; medians are reported. For context the script also times a full re-hash
(`verify_files`, what `validate` and `pull` do).

The last line is `RESULT slice_time_ratio=<one class / all> slice_mem_ratio=<one class / all>`
(time: each the first load of a fresh process; memory: after a small bundle, see the comment at
the end); the goal is <= 0.05 for both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import gc, json, sys, time
from sowmeta.bundle import Bundle

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0

path, classes, warmup = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if warmup:  # load a small bundle first: imports done, the library code this path runs paged in
    Bundle.load(warmup)
before = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak to the current resident set
        f.write("5")
except OSError:
    pass
collecting = []  # seconds of each cyclic garbage collection that runs inside the timed load

def on_gc(phase, info, began=[0.0]):
    if phase == "start":
        began[0] = time.perf_counter()
    else:
        collecting.append(time.perf_counter() - began[0])

gc.callbacks.append(on_gc)
start = time.perf_counter()
bundle = Bundle.load(path, classes=classes)
seconds = time.perf_counter() - start
gc.callbacks.remove(on_gc)
peak = status("VmHWM")
warm = []
for _ in range(3):
    start = time.perf_counter()
    Bundle.load(path, classes=classes)
    warm.append(time.perf_counter() - start)
rows = sum(s.mean.numel() + s.var.numel() for s in bundle.stats.values())
print(json.dumps({"seconds": seconds, "gc": sum(collecting), "added": peak - before, "warm": min(warm), "rows": rows}))
"""


def make_bundle(directory: Path, classes: int, taps: int | None = None, name: str = "resnet50-random") -> Path:
    """A resnet50-shaped bundle (random-init weights, random statistics; the first ``taps`` taps) saved under ``directory``."""
    import torch

    from sowmeta.bundle import Bundle, ModelRecord, SourceRecord
    from sowmeta.models import fingerprint, load_model
    from sowmeta.moments.class_moments import ClassMoments
    from sowmeta.models.taps import resolve_taps

    loaded = load_model("resnet50", weights="none")
    module = loaded.module
    named = dict(module.named_modules())
    taps = resolve_taps(module, "bn-inputs")[:taps]
    g = torch.Generator().manual_seed(0)
    images = torch.full((classes,), 50, dtype=torch.int64)
    moments = {}
    for t in taps:
        c = named[t.module].num_features
        count = torch.full((classes, c), 50.0 * 49, dtype=torch.float64)
        mean = torch.randn(classes, c, generator=g, dtype=torch.float64)
        m2 = torch.rand(classes, c, generator=g, dtype=torch.float64) * count
        image_m2 = torch.rand(classes, c, generator=g, dtype=torch.float64) * m2 / count * 50  # a part of var, as the format requires
        moments[t.name] = ClassMoments(count, mean, m2, images.clone(), mean.clone(), image_m2)
    record = ModelRecord("resnet50", fingerprint(module), classes, [f"class {i}" for i in range(classes)])
    source = SourceRecord("A", "after-training", "random", 0)
    bundle = Bundle.from_moments(moments, taps, model=record, preprocessing=loaded.preprocessing, source=source)
    return bundle.save(directory / name)


def child(path: Path, classes: list[int] | None, warmup: Path | None) -> dict[str, float]:
    argv = [sys.executable, "-c", _CHILD, str(path), json.dumps(classes), str(warmup or "")]
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per variant (alternating)")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the bundle (default: a temporary directory)")
    args = ap.parse_args()
    from sowmeta.bundle import Bundle
    from sowmeta.bundle.files import verify_files
    from sowmeta.bundle.verified import RACY_SECONDS

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        os.environ["SOWMETA_CACHE"] = str(Path(tmp) / "cache")  # the record of verified files, here and in the children
        path = make_bundle(Path(tmp), args.classes)
        small = make_bundle(Path(tmp), 2, taps=2, name="small")
        size = sum(f.stat().st_size for f in path.iterdir())
        time.sleep(RACY_SECONDS + 0.5)  # files written just now are too fresh to be remembered as verified
        verify_files(small, Bundle.read_manifest(small))
        start = time.perf_counter()
        verify_files(path, Bundle.read_manifest(path))  # in full, as pull and validate do; remembers the files
        rehash = time.perf_counter() - start
        one = [args.classes // 2]
        variants = {(name, warm): (None if name == "all" else one, small if warm else None) for name in ("all", "one") for warm in (False, True)}
        for classes, warmup in variants.values():  # warm-up: page cache, bytecode
            child(path, classes, warmup)
        runs: dict[tuple[str, bool], list[dict[str, float]]] = {key: [] for key in variants}
        for r in range(args.repeats):
            for key in (list(variants) if r % 2 == 0 else list(reversed(variants))):
                runs[key].append(child(path, *variants[key]))
    keys = ("seconds", "gc", "added", "warm")
    med = {key: {k: statistics.median(run[k] for run in rs) for k in keys} for key, rs in runs.items()}
    print(f"bundle: resnet50 bn-inputs, 53 taps, {args.classes} classes, {size / 1e6:.1f} MB on disk; full re-hash (validate, pull) {rehash * 1e3:.0f} ms")
    print(f"{'load':<6}{'process':<22}{'values':>12}{'load ms':>10}{'of it gc ms':>13}{'added MiB':>11}{'next load ms':>14}")
    for (name, warm), m in med.items():
        process = "small bundle loaded" if warm else "fresh"
        print(
            f"{name:<6}{process:<22}{runs[name, warm][0]['rows']:>12,}{m['seconds'] * 1e3:>10.1f}{m['gc'] * 1e3:>13.2f}"
            f"{m['added'] / 2**20:>11.2f}{m['warm'] * 1e3:>14.2f}"
        )
    ratio = {warm: {k: med["one", warm][k] / med["all", warm][k] for k in ("seconds", "added", "warm")} for warm in (False, True)}
    for warm, r in ratio.items():
        print(f"one / all, {'after a small bundle' if warm else 'fresh process'}: time {r['seconds']:.4f}, added memory {r['added']:.4f}, next load {r['warm']:.4f}")
    # Time: the first load in a fresh process (imports included). Memory: after a small bundle was loaded,
    # so that the library code paged in by the first load (shared, a few tens of MiB) is not counted as the bundle's.
    print(f"RESULT slice_time_ratio={ratio[False]['seconds']:.3f} slice_mem_ratio={ratio[True]['added']:.3f}")


if __name__ == "__main__":
    main()
