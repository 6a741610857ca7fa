"""Model sources beyond torchvision (issue 15): timm by name, timm and transformers repositories by Hub id, any output type.

The Hub is the loopback test server; every model is tiny and built here with random weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_image_folder
from hub_server import HubServer
from registry_fixtures import HUB_ORG, fake_hub, registry_env  # noqa: F401  (fixtures)
from safetensors.torch import save_file
from torch import nn

from sowmeta import errors as E
from sowmeta.collectors import collect
from sowmeta.logits import logits_of
from sowmeta.models import load_model, parse_model_args
from sowmeta.synth import SynthConfig, synthesize

timm = pytest.importorskip("timm", reason="needs the timm extra (pip install 'sowmeta[timm]')")
transformers = pytest.importorskip("transformers", reason="needs the transformers extra (pip install 'sowmeta[transformers]')")


def upload(server: HubServer, repo: str, folder: Path) -> None:
    """Put every file of ``folder`` in a new repository of the test Hub."""
    server.add_repo(repo, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})


def tiny_timm_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=10).eval()


def tiny_transformers_vit(labels: list[str]) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                    intermediate_size=64, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                    label2id={n: i for i, n in enumerate(labels)})
    return transformers.ViTForImageClassification(config).eval()


def test_timm_repository_by_hub_id_gives_the_same_logits(fake_hub: HubServer, tmp_path: Path):  # noqa: F811
    from timm.models._hub import save_for_hf

    model = tiny_timm_vit()
    save_for_hf(model, str(tmp_path / "repo"), model_args=dict(img_size=32, patch_size=8, depth=2), safe_serialization=True)
    upload(fake_hub, f"{HUB_ORG}/tiny-timm-vit", tmp_path / "repo")
    loaded = load_model(f"hf-hub:{HUB_ORG}/tiny-timm-vit")
    commit = fake_hub.state.repos[f"{HUB_ORG}/tiny-timm-vit"].branches["main"]
    assert loaded.name == f"hf-hub:{HUB_ORG}/tiny-timm-vit@{commit}" and loaded.weights == "DEFAULT"
    assert (loaded.num_classes, loaded.preprocessing.crop, loaded.preprocessing.mean) == (10, 32, (0.5, 0.5, 0.5))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x))
    again = load_model(loaded.name)  # the recorded name (commit pinned) rebuilds the same model
    with torch.no_grad():
        torch.testing.assert_close(again.module(x), model(x))


def test_transformers_repository_by_hub_id_collects_and_synthesizes(fake_hub: HubServer, tmp_path: Path):  # noqa: F811
    labels = ["cat", "dog", "ship"]
    model = tiny_transformers_vit(labels)
    model.save_pretrained(tmp_path / "repo", safe_serialization=True)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]).save_pretrained(tmp_path / "repo")
    upload(fake_hub, f"{HUB_ORG}/tiny-hf-vit", tmp_path / "repo")
    loaded = load_model(f"hf-hub:{HUB_ORG}/tiny-hf-vit")
    assert loaded.labels == labels and loaded.num_classes == 3
    assert (loaded.preprocessing.crop, loaded.preprocessing.resize, loaded.preprocessing.mean) == (32, 32, (0.4, 0.5, 0.6))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = loaded.module(x)
        assert not isinstance(out, torch.Tensor)  # an ImageClassifierOutput, read through logits_of
        torch.testing.assert_close(logits_of(out), model(pixel_values=x).logits)
    data = write_image_folder(tmp_path / "d", classes=3, per_class=2, size=32)
    bundle, _ = collect(loaded, data, taps="ln-inputs", batch_size=3, labels_by_position=True, out=tmp_path / "b")
    assert all(t.axis == -1 and t.channels == 32 for t in bundle.manifest.taps) and bundle.manifest.model.architecture == loaded.name
    result = synthesize(tmp_path / "b", None, classes=["dog"], per_class=2, config=SynthConfig.cifar(iterations=3, batch_size=2))
    assert result.images().shape == (2, 3, 32, 32) and result.labels.tolist() == [1, 1]


def test_timm_by_name_with_arguments_and_pretrained_weights_from_the_hub(fake_hub: HubServer, tmp_path: Path):  # noqa: F811
    reference = timm.create_model("test_vit", pretrained=False).eval()
    repo = reference.pretrained_cfg["hf_hub_id"]
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    fake_hub.add_repo(repo, {"model.safetensors": (tmp_path / "model.safetensors").read_bytes()})
    loaded = load_model("timm:test_vit", weights="DEFAULT")
    commit = fake_hub.state.repos[repo].branches["main"]
    assert loaded.weights == f"hf://{repo}@{commit}/model.safetensors" and loaded.preprocessing.crop == 160
    assert loaded.labels is not None and loaded.labels[0] == "tench"
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), reference(x))
    small = load_model("timm:vit_tiny_patch16_224", weights="none", args=parse_model_args(["img_size=32", "patch_size=8", "depth=2"]))
    assert small.preprocessing.crop == 32 and small.args == {"img_size": 32, "patch_size": 8, "depth": 2}


def test_dict_and_tuple_outputs_work_through_collect_and_synthesize(tmp_path: Path):
    from sowmeta.models import LoadedModel
    from sowmeta.models.preprocess import Preprocessing

    class DictNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = torch.relu(self.bn(self.conv(x)))
            return {"features": h, "logits": self.fc(h.mean(dim=(2, 3)))}

    class TupleNet(DictNet):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
            out = super().forward(x)
            return out["logits"], out["features"]

    data = write_image_folder(tmp_path / "d", classes=3, per_class=2, size=12)
    for i, net in enumerate((DictNet(), TupleNet())):
        model = LoadedModel(net.eval(), "dict-net", None, 3, None, Preprocessing(crop=12))
        bundle, _ = collect(model, data, batch_size=3, labels_by_position=True)
        result = synthesize(bundle, model, classes=[0], per_class=1, config=SynthConfig(iterations=2, batch_size=1, jitter=1, check_fingerprint=False))
        assert result.prediction.shape == (1,), i


def test_squeezenet_classes_come_from_a_forward_pass():
    m = load_model("squeezenet1_1", weights="none")
    assert m.num_classes == 1000 and m.labels is not None and len(m.labels) == 1000


def test_model_argument_errors_are_one_line():
    with pytest.raises(E.ConfigError, match="KEY=VALUE"):
        parse_model_args(["no-equals"])
    with pytest.raises(E.ModelError, match="does not apply to cifar-resnet20"):
        load_model("cifar-resnet20", weights=None, args={"depth": 3})
    with pytest.raises(E.ModelError, match="hf-hub:ORG/NAME"):
        load_model("hf-hub:not a repo", weights=None)
    with pytest.raises(E.ModelError, match="unknown timm model 'vit_tiny_patch16_23'; did you mean 'timm:vit_tiny_patch16_"):
        load_model("timm:vit_tiny_patch16_23", weights=None)
