"""The ImageNet path on the real network and photographs of ../shared (skipped without them): EfficientNet-Lite0,
Scenario C from a few photographs, labels by name, float16 storage, the fused network, the imagenet preset, and a
bundle pushed into the model repository's subfolder on the loopback Hub and synthesized by that name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from registry_fixtures import HUB_ORG, fake_hub, registry_env  # noqa: F401  (fixtures)

from sowmeta import Bundle, SynthConfig, collect_seeds, load_model, registry, synthesize
from sowmeta.errors import SowmetaError
from sowmeta.cli.main import main
from sowmeta.env import shared_dir
from sowmeta.evaluation.naturalness import naturalness

WEIGHTS = shared_dir() / "models" / "imagenet" / "efficientnet-lite0.safetensors"
PHOTOS = shared_dir() / "data" / "imagenet-sample"
pytestmark = pytest.mark.skipif(not WEIGHTS.exists() or not PHOTOS.exists(),
                                reason=f"needs {WEIGHTS} and {PHOTOS} (set SOWMETA_SHARED to the shared data folder)")
NAMES = {1: "goldfish", 340: "zebra", 417: "balloon"}


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    return load_model("timm:tf_efficientnet_lite0", weights=str(WEIGHTS))


def _seeds(root: Path) -> Path:
    """Each class's photograph as a 256 x 256 PNG (the network's resize size): the collector's resize leaves it as it is."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    from sowmeta.data.folders import read_image

    wnids = sorted(os.listdir(PHOTOS))
    for k, name in NAMES.items():
        photo = TF.pil_to_tensor(read_image(sorted((PHOTOS / wnids[k]).iterdir())[0]).convert("RGB"))
        square = TF.center_crop(TF.resize(photo, [256], interpolation=TF.InterpolationMode.BICUBIC, antialias=True), [256, 256])
        (root / name).mkdir(parents=True)
        Image.fromarray(square.permute(1, 2, 0).numpy()).save(root / name / "photo.png")
    return root


class Bundles:
    """The bundles of the three photographs, each collected when a test first asks for it (Scenario C, 1,000 rows)."""

    KINDS = {"f32": {}, "f16": dict(dtype="float16"), "fused": dict(fuse=True)}

    def __init__(self, model, root: Path) -> None:
        self.model, self.root, self.made = model, root, {}
        _seeds(root / "seeds")

    def __getitem__(self, kind: str) -> Path:
        if kind not in self.made:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("SOWMETA_COMPILE", "0")  # three photographs: compiling the reductions would take longer than running them
                collect_seeds(self.model, self.root / "seeds", out=self.root / kind, **self.KINDS[kind])
            self.made[kind] = self.root / kind
        return self.made[kind]


@pytest.fixture(scope="module")
def bundles(lite0, tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    return Bundles(lite0, tmp_path_factory.mktemp("imagenet"))


def test_scenario_c_statistics_are_each_photographs_own(lite0, bundles):
    """Every class's mean and variance at the first tap are that photograph's, recomputed in float64 by a forward hook
    on the centre 224 x 224 of its PNG."""
    from PIL import Image

    b = Bundle.load(bundles["f32"], classes=list(NAMES))
    assert b.counts.tolist() == [1, 1, 1] and b.manifest.source.scenario == "C"
    tap = b.manifest.tap_names[0]
    seen = []
    handle = lite0.module.get_submodule(tap.removesuffix(":in")).register_forward_hook(lambda m, a, o: seen.append(a[0]))
    net = lite0.module.eval().double()
    try:
        for k, name in NAMES.items():
            pixels = torch.from_numpy(__import__("numpy").array(Image.open(bundles.root / "seeds" / name / "photo.png")))
            x = pixels.permute(2, 0, 1)[None, :, 16:240, 16:240].double() / 255
            with torch.no_grad():
                net((x - 0.5) / 0.5)  # lite0's normalization: mean 0.5, std 0.5
            feature = seen.pop()
            mean, var = feature.mean(dim=(0, 2, 3)), feature.var(dim=(0, 2, 3), unbiased=False)
            assert torch.allclose(b.stats[tap].mean[b.row(k)].double(), mean, rtol=1e-4, atol=1e-5), name
            assert torch.allclose(b.stats[tap].var[b.row(k)].double(), var, rtol=1e-4, atol=1e-5), name
    finally:
        handle.remove()
        lite0.module.float()


@pytest.mark.slow
def test_float16_storage_is_the_float32_statistics_rounded(bundles):
    a, h = Bundle.load(bundles["f32"]), Bundle.load(bundles["f16"])
    assert (bundles["f16"] / "stats.safetensors").stat().st_size < 0.6 * (bundles["f32"] / "stats.safetensors").stat().st_size
    for tap in a.manifest.tap_names:
        assert torch.equal(h.stats[tap].mean.float(), a.stats[tap].mean.half().float()), tap


def test_a_few_classes_of_a_thousand_are_loaded_alone(bundles):
    b = Bundle.load(bundles["f32"], classes=["zebra", "goldfish"])
    assert b.classes == [340, 1] and b.stats[b.manifest.tap_names[0]].mean.shape[0] == 2


def test_the_imagenet_path_synthesizes_by_label_names(lite0, bundles, tmp_path: Path):
    """The CLI's preset for 224 px (auto: imagenet) with labels by name; the grid holds one image per class in one row."""
    out = tmp_path / "s.h5"
    r = CliRunner().invoke(main, ["synthesize", "--bundle", str(bundles["f32"]), "--model", "timm:tf_efficientnet_lite0", "--weights", str(WEIGHTS),
                                  "--classes", "goldfish,zebra", "--per-class", "1", "--iterations", "3", "--batch-size", "2", "--mixed",
                                  "--out", str(out), "--allow-low-confidence", "--json"])
    assert r.exit_code == 0, r.output
    assert '"preset": "imagenet"' in r.output
    from sowmeta.data.image_sets import load_images

    images, labels = load_images(out)
    assert images.shape == (2, 3, 224, 224) and sorted(labels.tolist()) == [1, 340]
    assert naturalness([images]).images == 2


@pytest.mark.slow
def test_the_fused_network_synthesizes_from_its_bundle(lite0, bundles):
    from sowmeta.models.fuse import fuse_bn

    fused = load_model("timm:tf_efficientnet_lite0", weights=str(WEIGHTS))
    fused.module = fuse_bn(fused.module, torch.rand(1, 3, 224, 224))
    config = SynthConfig.preset("imagenet", iterations=2, batch_size=3, mixed=True)
    result = synthesize(bundles["fused"], fused, classes=list(NAMES), per_class=1, config=config)
    assert result.uint8.shape == (3, 3, 224, 224)
    with pytest.raises(SowmetaError):
        synthesize(bundles["fused"], lite0, classes=[1], per_class=1, config=config)  # the unfused network is not the one recorded


@pytest.mark.slow
def test_a_bundle_in_the_model_repository_is_synthesized_by_name(lite0, bundles, fake_hub, tmp_path: Path):  # noqa: F811
    repo = f"{HUB_ORG}/efficientnet-lite0"
    fake_hub.add_repo(repo, {"efficientnet-lite0.safetensors": WEIGHTS.read_bytes(), "README.md": b"---\nlicense: apache-2.0\n---\n# lite0\n"})
    registry.push(bundles["f16"], f"{repo}/sowmeta", registry="hub")
    r = CliRunner().invoke(main, ["synthesize", "--bundle", f"{repo}/sowmeta", "--registry", "hub", "--classes", "balloon", "--per-class", "1",
                                  "--iterations", "2", "--out", str(tmp_path / "h.h5"), "--allow-low-confidence", "-q"])
    assert r.exit_code == 0, r.output
