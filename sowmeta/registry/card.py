"""The bundle's model card (README.md), built with huggingface_hub's ``ModelCard``/``ModelCardData``, and the
section a model's own card gets when a bundle is published beside it (``--update-model-card``).

The card publishes no machine path: the data is named by its dataset name, the weights by a Hub
reference, a torchvision weights name or a file name with its sha256. Its "How to use"
commands run as written (tests/test_registry_publish.py runs them against the test Hub).
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

from ..bundle import MANIFEST_NAME, Bundle, Manifest
from ..errors import ConfigError
from ..data.jpeg_quality import describe_compression, source_compression_note

__all__ = ["render_card", "card_from_manifest", "weights_file", "model_card_section", "how_to_use", "TAGS", "DEFAULT_LICENSE", "SECTION_BEGIN", "SECTION_END"]

DEFAULT_LICENSE = "other"
HOME = "https://github.com/sowmeta/sowmeta"
INSTALL = f"pip install git+{HOME}"
TAGS = ("sowmeta", "model-inversion", "class-conditional-statistics", "feature-statistics", "image-synthesis")
MAX_LABELS = 100
SECTION_BEGIN = "<!-- sowmeta:begin -->"
SECTION_END = "<!-- sowmeta:end -->"
_LICENSE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_SCENARIOS = {"A": "a labelled dataset", "B": "a few seed images per class", "C": "a single seed image"}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _compression_hint(record: dict[str, Any] | None) -> str:
    """What a card reader should know when the statistics' JPEGs are compressed enough to show in synthesized images."""
    if source_compression_note(record) is None:
        return ""
    return "; compressed enough that synthesized images carry the compression (networks trained on lossless images recognise them less often)"


def _privacy_text(record: dict[str, Any] | None) -> str:
    """The card's line on the release's guarantee (docs/privacy.md says what it covers)."""
    if not record:
        return "none: the statistics are exact, and they reveal something about the images they came from"
    acc = record["accountant"]
    return (f"({record['epsilon']:g}, {record['delta']:g})-DP for adding or removing one image, {record['mechanism']} mechanism "
            f"(noise multiplier {record['noise_multiplier']:.4g}, each image's moments clipped at {record['clip']:g}x each tap's typical energy; "
            f"accountant {_md(acc['name'])} {_md(acc['version'])}); counts are noisy too. The model's weights are not covered")


def _md(text: str) -> str:
    """Escape the characters that would turn a label into Markdown markup."""
    return re.sub(r"([\\`*_|<>\[\]])", r"\\\1", text)


def _weights_text(manifest: Manifest) -> str:
    m = manifest.model
    if not m.weights:
        return "not recorded"
    sha = f" (sha256 `{m.weights_sha256[:16]}…`)" if m.weights_sha256 else ""
    return f"`{m.weights}`{sha}"


def weights_file(manifest: Manifest) -> str | None:
    """The file name of the weights a bundle was recorded on when only a copy of that file can provide them (a local
    file, recorded by name and sha256); None when sowmeta fetches them itself (a Hub reference, a torchvision weights
    name, DEFAULT) or none are recorded."""
    m = manifest.model
    if m.weights in (None, "DEFAULT") or str(m.weights).startswith("hf://") or m.weights_sha256 is None:
        return None
    return str(m.weights)


def how_to_use(manifest: Manifest, name: str, *, weights_in_repo: bool = False) -> list[str]:
    """The shell commands the card shows: pull the bundle, then synthesize a few images of its first class with statistics.

    The synthesize command names ``--weights`` only when sowmeta cannot find them itself: a
    weights file that is neither on the Hub (``hf://``), nor a torchvision weights name, nor in
    the bundle's own repository. A custom model needs ``--model`` (never taken from a manifest).
    """
    m = manifest.model
    held = [k for k in range(m.num_classes) if k not in set(manifest.source.empty_classes)] or [0]
    first = m.labels[held[0]] if m.labels else str(held[0])
    slug = re.sub(r"[^A-Za-z0-9]+", "-", first).strip("-").lower() or "class"
    command = ["sowmeta", "synthesize", "--bundle", name, "--registry", "hub", "--classes", first, "--per-class", "4",
               "--iterations", "200", "--out", f"{slug}.h5", "--grid", f"{slug}.png"]
    if m.architecture == "custom":
        command += ["--model", m.factory or "package.module:factory", "--weights", m.weights or "FILE"]
    elif weights_file(manifest) is not None and not weights_in_repo:
        command += ["--weights", m.weights]  # type: ignore[list-item]
    return [INSTALL, f"sowmeta pull {shlex.quote(name)} --registry hub", shlex.join(command)]


def card_from_manifest(manifest: Manifest, name: str, *, license: str = DEFAULT_LICENSE, manifest_size: int = 0, weights_in_repo: bool = False) -> str:
    """The README.md text for a bundle named ``name`` (``ORG/NAME[/SUBFOLDER]``) with this manifest."""
    from huggingface_hub import ModelCard, ModelCardData

    if not _LICENSE_RE.match(license):
        raise ConfigError(f"license {license!r} is not a Hub license id (e.g. apache-2.0, mit, cc-by-4.0, other)")
    m, src, pre = manifest.model, manifest.source, manifest.preprocessing
    arch_tag = re.sub(r"[^a-z0-9.-]+", "-", m.architecture.lower()).strip("-")
    data = ModelCardData(
        library_name="sowmeta",
        license=license,
        base_model=m.base_model,
        datasets=[src.data] if src.collector != "seeds" and re.fullmatch(r"[\w./-]{1,96}", src.data) else None,
        tags=[*TAGS, *([arch_tag] if arch_tag and arch_tag not in TAGS else [])],
    )
    channels = sum(t.channels for t in manifest.taps)
    kinds = Counter(t.kind for t in manifest.taps)
    data_bytes = sum(f.size for f in manifest.files)
    labels = m.labels or [str(k) for k in range(m.num_classes)]
    shown = ", ".join(f"{i}: {_md(label)}" for i, label in enumerate(labels[:MAX_LABELS]))
    if len(labels) > MAX_LABELS:
        shown += f", ... and {len(labels) - MAX_LABELS} more (see `{MANIFEST_NAME}`)"
    empty = f"; {len(src.empty_classes)} classes have no statistics" if src.empty_classes else ""
    base = f"[{m.base_model}](https://huggingface.co/{m.base_model})" if m.base_model else "not recorded"
    arch = f"custom (`{m.factory}`, built by your own code)" if m.architecture == "custom" else f"`{m.architecture}`"
    resize = f"resize {pre.resize}, " if pre.resize else ""
    commands = "\n".join(how_to_use(manifest, name, weights_in_repo=weights_in_repo))
    body = f"""
# {name}

Class-conditional feature statistics of **{_md(m.architecture)}** ({m.num_classes} classes), published with
[sowmeta]({HOME}). They let the classifier be reused as an image generator:
`sowmeta synthesize` optimizes images until the model's features match these per-class means and variances
("You Get What You Sow", Zhu et al.).

## How to use

```bash
{commands}
```

```python
from sowmeta.bundle import Bundle

bundle = Bundle.from_pretrained("{name}")
```

## Model

| | |
|---|---|
| architecture | {arch} |
| base model | {base} |
| weights | {_weights_text(manifest)} |
| fingerprint | `{m.fingerprint}` |
| BatchNorm fused | {"yes" if m.fused else "no"} |

The fingerprint is a sha256 of the model's weights: `Bundle.check(model)` tells whether a model is the one
these statistics were recorded on.

## Statistics

- **Classes**: {m.num_classes}
- **Taps**: {len(manifest.taps)} ({", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))}), {channels} channels in total
- **Stored as**: {manifest.dtype}, {len(manifest.files)} safetensors file{'' if len(manifest.files) == 1 else 's'}, {_size(data_bytes + manifest_size)}
- **Preprocessing**: {resize}crop {pre.crop}, mean {list(pre.mean)}, std {list(pre.std)}, {pre.interpolation}
- **Source**: scenario {src.scenario} ({_SCENARIOS.get(src.scenario, "an unrecorded source")}), collector `{src.collector}`, data `{_md(src.data)}`, {src.images} images{empty}
- **Source images**: {describe_compression(src.compression)}{_compression_hint(src.compression)}
- **Differential privacy**: {_privacy_text(src.privacy)}
- **Format**: sowmeta bundle {manifest.format_version}, written by sowmeta {manifest.tool_version} on {manifest.created}

## Classes

{shown}
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def render_card(bundle_dir: str | Path, name: str, *, license: str = DEFAULT_LICENSE) -> str:
    """The README.md text for the bundle at ``bundle_dir``, to be published as ``name``.

    Example:
        >>> text = render_card("bundles/cifar-resnet56", "sowmeta/cifar-resnet56", license="mit")
    """
    path = Path(bundle_dir)
    manifest = Bundle.read_manifest(path)
    size = (path / MANIFEST_NAME).stat().st_size
    return card_from_manifest(manifest, name, license=license, manifest_size=size)


def model_card_section(card: str | None, name: str, manifest: Manifest, *, license: str | None = None) -> str:
    """``card`` (a model's README.md, or None: then a new card with ``license`` in its YAML) with its sowmeta section
    added or refreshed; every other byte kept.

    The section sits between ``<!-- sowmeta:begin -->`` and ``<!-- sowmeta:end -->``; a card
    without one gets it appended.
    """
    m = manifest.model
    sub = name.split("/", 2)[2] if name.count("/") >= 2 else ""
    section = (
        f"{SECTION_BEGIN}\n## Class-conditional statistics (sowmeta)\n\n"
        f"[`{sub or name}/`](./{sub}) holds the class-conditional feature statistics of this model "
        f"({m.num_classes} classes, {len(manifest.taps)} taps, scenario {manifest.source.scenario}): with them "
        f"[sowmeta]({HOME}) turns the classifier into an image generator.\n\n"
        f"```bash\n{INSTALL}\n{how_to_use(manifest, name, weights_in_repo=True)[2]}\n```\n{SECTION_END}"
    )
    if card is None:  # a model repository without a card gets one: YAML metadata, a title, the section
        from huggingface_hub import ModelCardData

        meta = ModelCardData(license=license, tags=["sowmeta"]).to_yaml()
        return f"---\n{meta}\n---\n\n# {name.split('/')[0]}/{name.split('/')[1]}\n\n{section}\n"
    begin, end = card.find(SECTION_BEGIN), card.find(SECTION_END)
    if begin != -1 and end > begin:
        return card[:begin] + section + card[end + len(SECTION_END):]
    return card + ("" if card.endswith("\n") else "\n") + "\n" + section + "\n"
