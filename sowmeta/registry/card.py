"""The model card (README.md) published with a bundle on the Hub: YAML front matter + a human summary."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from ..bundle import MANIFEST_NAME, Bundle, Manifest
from ..errors import ConfigError

__all__ = ["render_card", "card_from_manifest", "TAGS", "DEFAULT_LICENSE"]

DEFAULT_LICENSE = "other"
TAGS = ("sowmeta", "model-inversion", "class-conditional-statistics", "feature-statistics", "image-synthesis")
MAX_LABELS = 100
_LICENSE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_PLAIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_SCENARIOS = {
    "A": "a labelled dataset",
    "B": "a few seed images per class",
    "C": "a single seed image",
}


def _yaml_scalar(value: str) -> str:
    """A plain scalar when safe, else a double-quoted one (JSON strings are valid YAML)."""
    return value if _PLAIN_RE.match(value) and value.lower() not in ("true", "false", "null", "yes", "no") else json.dumps(value)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _md(text: str) -> str:
    """Escape the characters that would turn a label into Markdown markup."""
    return re.sub(r"([\\`*_|<>\[\]])", r"\\\1", text)


def card_from_manifest(manifest: Manifest, name: str, *, license: str = DEFAULT_LICENSE, manifest_size: int = 0) -> str:
    """The README.md text for a bundle named ``name`` (``ORG/NAME``) with this manifest."""
    if not _LICENSE_RE.match(license):
        raise ConfigError(f"license {license!r} is not a Hub license id (e.g. apache-2.0, mit, cc-by-4.0, other)")
    m, src, pre = manifest.model, manifest.source, manifest.preprocessing
    arch_tag = re.sub(r"[^a-z0-9.-]+", "-", m.architecture.lower()).strip("-")
    tags = [*TAGS, *([arch_tag] if arch_tag and arch_tag not in TAGS else [])]
    front = ["---", "library_name: sowmeta", f"license: {_yaml_scalar(license)}"]
    if m.base_model:
        front.append(f"base_model: {_yaml_scalar(m.base_model)}")
    front.append("tags:")
    front += [f"- {_yaml_scalar(t)}" for t in tags]
    front.append("---")

    channels = sum(t.channels for t in manifest.taps)
    kinds = Counter(t.kind for t in manifest.taps)
    data_bytes = sum(f.size for f in manifest.files)
    labels = m.labels or [str(k) for k in range(m.num_classes)]
    shown = ", ".join(f"{i}: {_md(label)}" for i, label in enumerate(labels[:MAX_LABELS]))
    if len(labels) > MAX_LABELS:
        shown += f", ... and {len(labels) - MAX_LABELS} more (see `{MANIFEST_NAME}`)"
    scenario = _SCENARIOS.get(src.scenario, "an unrecorded source")
    empty = f"; {len(src.empty_classes)} classes had no image" if src.empty_classes else ""
    base = f"[{m.base_model}](https://huggingface.co/{m.base_model})" if m.base_model else "not recorded"
    resize = f"resize {pre.resize}, " if pre.resize else ""

    body = f"""
# {name}

Class-conditional feature statistics of **{_md(m.architecture)}** ({m.num_classes} classes), published with
sowmeta. They let the classifier be reused as an image generator: `sowmeta synthesize` optimizes images
until the model's features match these per-class means and variances.

## Model

| | |
|---|---|
| architecture | `{m.architecture}` |
| base model | {base} |
| weights | {f"`{m.weights}`" if m.weights else "not recorded"} |
| fingerprint | `{m.fingerprint}` |
| BatchNorm fused | {"yes" if m.fused else "no"} |

The fingerprint is a sha256 of the model's weights: `Bundle.check(model)` tells whether a model is the one
these statistics were recorded on.

## Statistics

- **Classes**: {m.num_classes}
- **Taps**: {len(manifest.taps)} ({", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))}), {channels} channels in total
- **Stored as**: {manifest.dtype}, {len(manifest.files)} safetensors file(s), {_size(data_bytes + manifest_size)}
- **Preprocessing**: {resize}crop {pre.crop}, mean {list(pre.mean)}, std {list(pre.std)}, {pre.interpolation}
- **Source**: scenario {src.scenario} ({scenario}), collector `{src.collector}`, data `{_md(src.data)}`, {src.images} images{empty}
- **Format**: sowmeta bundle {manifest.format_version}, written by sowmeta {manifest.tool_version} on {manifest.created}

## Classes

{shown}

## How to use

```bash
pip install sowmeta
export SOWMETA_REGISTRY=hub   # bundle names resolve on the Hugging Face Hub (the default is the local registry)
sowmeta pull {name}
sowmeta synthesize --bundle {name}   # see `sowmeta synthesize --help` for the options
```

```python
from sowmeta.registry import pull

bundle_dir = pull("{name}", registry="hub").path
```
"""
    return "\n".join(front) + "\n" + body


def render_card(bundle_dir: str | Path, name: str, *, license: str = DEFAULT_LICENSE) -> str:
    """The README.md text for the bundle at ``bundle_dir``, to be published as ``name``.

    Example:
        >>> text = render_card("bundles/cifar-resnet56", "sowmeta/cifar-resnet56", license="mit")
    """
    path = Path(bundle_dir)
    manifest = Bundle.read_manifest(path)
    size = (path / MANIFEST_NAME).stat().st_size
    return card_from_manifest(manifest, name, license=license, manifest_size=size)
