"""cifar-vit, the built-in LayerNorm network: builds, taps its LayerNorm inputs per feature, records exact statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sowmeta.collectors import TrainingCollector
from sowmeta.models import BUILTIN_MODELS, load_model
from sowmeta.models.preprocess import Preprocessing
from sowmeta.models.taps import probe, resolve_taps

LN_TAPS = [f"blocks.{i}.norm{j}" for i in range(6) for j in (1, 2)] + ["norm"]


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return load_model("cifar-vit", weights="none")


def test_cifar_vit_builds_with_cifar_preprocessing_and_gives_ten_logits(vit, tmp_path: Path):
    assert "cifar-vit" in BUILTIN_MODELS
    assert vit.num_classes == 10 and vit.labels[3] == "cat" and vit.preprocessing.crop == 32
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in vit.module.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits = vit.module(x)
    assert logits.shape == (3, 10)
    save_file(vit.module.state_dict(), str(tmp_path / "w.safetensors"))
    back = load_model("cifar-vit", weights=str(tmp_path / "w.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(back.module(x), logits)


@pytest.mark.parametrize("preset", ["auto", "ln-inputs"])
def test_auto_and_ln_taps_are_layernorm_inputs_over_the_features(vit, preset):
    taps = resolve_taps(vit.module, preset, prefix_tokens=1)
    assert [t.name for t in taps] == LN_TAPS
    assert {(t.kind, t.position, t.axis, t.prefix_tokens) for t in taps} == {("ln-input", "in", -1, 1)}
    found = probe(vit.module, taps, 32)
    assert set(found.channels.values()) == {96}  # the width, not the 64 patch tokens
    assert found.shapes["blocks.0.norm1"] == (1, 64, 96) and found.outputs == 10  # 65 tokens less the class token


def test_training_collector_without_the_class_token_equals_a_float64_recomputation(vit):
    model = vit.module
    collector = TrainingCollector(model, num_classes=10, taps="ln-inputs", prefix_tokens=1)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(6, 3, 32, 32, generator=g) for _ in range(2)]
    ys = [torch.tensor([0, 3, 3, 9, 0, 3]), torch.tensor([9, 9, 0, 3, 3, 0])]
    for x, y in zip(xs, ys):
        with collector.observe(y), torch.no_grad():
            model(x)
    bundle = collector.to_bundle(architecture="cifar-vit", preprocessing=Preprocessing(crop=32), labels=vit.labels)

    seen: dict[str, list[torch.Tensor]] = {"blocks.0.norm1": [], "blocks.5.norm2": [], "norm": []}
    handles = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen[n].append(a[0].detach())) for n in seen]
    with torch.no_grad():
        for x in xs:
            model(x)
    for h in handles:
        h.remove()
    y = torch.cat(ys)
    for name, parts in seen.items():
        feats = torch.cat(parts).double()  # [12, 65, 96]
        assert feats.shape == (12, 65, 96)
        feats = feats[:, 1:, :]  # without the class token
        for k in (0, 3, 9):
            mine = feats[y == k].reshape(-1, 96)
            torch.testing.assert_close(bundle.stats[name].mean[k].double(), mine.mean(0), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(bundle.stats[name].var[k].double(), mine.var(0, correction=0), rtol=1e-4, atol=1e-6)
    assert all(t.axis == -1 and t.prefix_tokens == 1 and t.channels == 96 for t in bundle.manifest.taps)
    assert bundle.counts.tolist() == [4, 0, 0, 5, 0, 0, 0, 0, 0, 3]  # images, not tokens


def test_the_benchmark_script_names_valid_probes_and_a_valid_chosen_setting(monkeypatch):
    """studies/vit_cifar.py: every named probe and the chosen synthesis setting build a SynthConfig."""
    import importlib
    import sys

    from sowmeta.synth import SynthConfig

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "studies"))
    monkeypatch.delitem(sys.modules, "vit_cifar", raising=False)
    script = importlib.import_module("vit_cifar")
    for name in script.PROBES:
        probe_name, variant, overrides = script.parse_probe(name)
        assert probe_name == name and variant in script.VARIANTS
        SynthConfig.cifar(**{**script.PROBE_BASE, **overrides})
    chosen = SynthConfig.cifar(**script.CHOSEN)
    assert chosen.zoom > 0 and chosen.color_shift > 0 and chosen.param == "pixel"
    args = script.parse(["--stages", "push,synth,eval", "--per-class", "4"])
    assert args.stages == ["push", "synth", "eval"] and f"{args.taps}-cls-{args.class_token}" in script.VARIANTS
    assert script.parse_probe('x:ln-inputs-cls-in:{"zoom": 0.1}') == ("x", "ln-inputs-cls-in", {"zoom": 0.1})
