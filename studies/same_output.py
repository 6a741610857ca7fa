"""Does a change of the code change what it writes? Digests of a collected bundle, a 15-iteration
synthesis and the golden bundles as read, from whichever sowmeta is on the path, for two versions to compare.

    python studies/same_output.py record after.json                 # this checkout
    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before python studies/same_output.py record before.json
    python studies/same_output.py compare before.json after.json     # exit 1 when they differ

The bundle is collected by CIFAR-10 ResNet-20 (../shared weights, or $SOWMETA_SHARED) from 20 test images per class,
one thread, so the bytes do not depend on how a reduction was split; the synthesis runs 15
iterations of the cifar preset on 2 images of each class from that bundle. The manifest is
compared without its creation time, the tool's version and the files' sha256 (the safetensors header
holds the manifest's sha256, which follows the time); everything else, every tensor byte included, is compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

SHARED = Path(os.environ.get("SOWMETA_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"
PER_CLASS = 20


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _extract(dest: Path) -> Path:
    """The first PER_CLASS test images of every class, as files in class folders."""
    with zipfile.ZipFile(SHARED / "data" / "cifar10" / "test.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
        taken: dict[str, int] = {}
        for name in names:
            label = name.split("/")[-2]
            if taken.get(label, 0) < PER_CLASS:
                taken[label] = taken.get(label, 0) + 1
                (dest / label).mkdir(parents=True, exist_ok=True)
                (dest / label / Path(name).name).write_bytes(z.read(name))
    return dest


def _safetensors_digest(path: Path) -> str:
    """The file's bytes, but for the manifest's sha256 in its header (it changes with the manifest's time)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header.get("__metadata__", {}).pop("manifest_sha256", None)
    return _sha(json.dumps(header, sort_keys=True).encode() + raw[8 + n :])


def _manifest_digest(path: Path) -> str:
    """The manifest without its creation time and the tool's version, and each file's sha256 (see above)."""
    data = json.loads(path.read_text())
    data.pop("created", None)
    data.get("tool", {}).pop("version", None)
    for record in data.get("files", []):
        record.pop("sha256", None)
    return _sha(json.dumps(data, sort_keys=True).encode())


def _tensors_digest(bundle) -> dict[str, str]:  # noqa: ANN001
    out = {"counts": _sha(bundle.counts.numpy().tobytes())}
    for tap, stats in sorted(bundle.stats.items()):
        for field in ("mean", "var", "global_mean", "global_var", "image_var"):
            value = getattr(stats, field, None)
            if value is not None:
                out[f"{tap}.{field}"] = _sha(value.contiguous().numpy().tobytes())
    return out


def record(out: Path) -> None:
    import sowmeta
    from sowmeta import Bundle, SynthConfig, collect, load_model, synthesize

    torch.set_num_threads(1)
    digests: dict[str, object] = {"sowmeta": str(Path(sowmeta.__file__).parent)}
    with tempfile.TemporaryDirectory() as tmp:
        data = _extract(Path(tmp) / "data")
        model = load_model("cifar-resnet20", weights=str(SHARED / "models" / "cifar10" / "resnet20.safetensors"))
        bundle_dir = Path(tmp) / "bundle"
        collect(model, data, out=bundle_dir, batch_size=50)
        digests["bundle_files"] = {p.name: _safetensors_digest(p) for p in sorted(bundle_dir.iterdir()) if p.suffix == ".safetensors"}
        digests["bundle_manifest"] = _manifest_digest(bundle_dir / "sowmeta.json")
        config = SynthConfig.cifar(iterations=15, batch_size=20, check_fingerprint=False)
        result = synthesize(bundle_dir, model, per_class=2, config=config)
        digests["synthesis_uint8"] = _sha(result.uint8.numpy().tobytes())
        digests["synthesis_float"] = _sha(result.images().numpy().tobytes())
        digests["synthesis_confidence"] = result.confidence.tolist()
    for golden in sorted(GOLDEN.iterdir()):
        digests[f"golden/{golden.name}"] = _tensors_digest(Bundle.load(golden))
    out.write_text(json.dumps(digests, indent=1) + "\n")
    print(f"recorded {out} with sowmeta from {digests['sowmeta']}")


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    differ = [k for k in sorted(set(a) | set(b)) if k != "sowmeta" and a.get(k) != b.get(k)]
    for key in differ:
        print(f"differs: {key}\n  {before.name}: {a.get(key)}\n  {after.name}: {b.get(key)}")
    print(f"{len(set(a) - {'sowmeta'}) - len(differ)} of {len(set(a) - {'sowmeta'})} records byte-identical")
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
