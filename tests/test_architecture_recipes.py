"""The four recipes of docs/architecture.md, each run as written: a new F_l, model source, output sink and registry backend."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_net, write_image_folder

from sowmeta import errors as E
from sowmeta.cli.main import main
from sowmeta.collectors import collect
from sowmeta.models import LoadedModel
from sowmeta.models.preprocess import Preprocessing
from sowmeta.synth import SynthConfig, synthesize


def cli(*args: object):  # noqa: ANN201
    return CliRunner().invoke(main, [str(a) for a in args])


def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, code: str) -> str:
    (tmp_path / "plugins").mkdir(exist_ok=True)
    (tmp_path / "plugins" / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    return name


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    model = LoadedModel(tiny_net(4, 0), "conftest:tiny_net", "none", 4, None, Preprocessing(crop=12))
    bundle, _ = collect(model, write_image_folder(tmp_path / "data"), batch_size=5)
    return bundle.save(tmp_path / "bundle")


def test_recipe_feature_loss_usable_from_the_cli(bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = plugin(tmp_path, monkeypatch, "l1_losses", """
        from sowmeta.synth import register_feature_loss

        @register_feature_loss("l1-test")
        def l1(mean, var, target_mean, target_var, segments):
            return (segments.sum((mean - target_mean).abs()) + segments.sum((var - target_var).abs())).mean(dim=0)
    """)
    out = tmp_path / "s.h5"
    r = cli("--plugin", name, "synthesize", "--bundle", bundle_dir, "--model", "conftest:tiny_net", "--weights", "none",
            "--classes", "0", "--per-class", "2", "--batch-size", "2", "--iterations", "3", "--feature-loss", "l1-test",
            "--out", out, "-q", "--allow-low-confidence")
    assert r.exit_code == 0, r.output
    import h5py
    import json

    with h5py.File(out) as f:
        assert json.loads(f.attrs["config"])["feature_loss"] == "l1-test"
    r = cli("--plugin", name, "synthesize", "--bundle", bundle_dir, "--model", "conftest:tiny_net", "--weights", "none",
            "--feature-loss", "l1-tset", "--out", tmp_path / "t.h5", "-q")
    assert r.exit_code == 1 and "did you mean 'l1-test'?" in r.output
    from sowmeta.synth import register_feature_loss

    with pytest.raises(E.ConfigError, match="already registered"):
        register_feature_loss("l1-test")(lambda *a: None)


def test_recipe_model_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = plugin(tmp_path, monkeypatch, "zoo_source", """
        import torch
        from torch import nn

        from sowmeta.models import MODEL_SOURCES, LoadedModel, load_into
        from sowmeta.preprocess import Preprocessing

        class ZooSource:
            '''Models named zoo-<width>: a small CNN of that width (runs no user code: manifests may name them).'''

            runs_code = False

            def claims(self, name):
                return name.startswith("zoo-") and name[4:].isdigit()

            def names(self):
                return ["zoo-8", "zoo-16"]

            def build(self, name, weights, num_classes, args):
                width = int(name[4:])
                torch.manual_seed(width)
                module = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes or 3))
                if weights not in (None, "DEFAULT"):
                    load_into(module, weights)
                return LoadedModel(module, name, weights, num_classes or 3, ["a", "b", "c"], Preprocessing(crop=16))

        if "zoo" not in MODEL_SOURCES:
            MODEL_SOURCES.register("zoo", ZooSource())
    """)
    r = cli("--plugin", name, "taps", "zoo-8", "--json")
    assert r.exit_code == 0, r.output
    assert '"channels": 8' in r.output
    import importlib

    importlib.import_module(name)
    from sowmeta.models import list_models, load_model

    assert "zoo-16" in list_models("zoo-*")
    model = load_model("zoo-8", weights="DEFAULT")
    data = write_image_folder(tmp_path / "d", classes=3, per_class=2, size=16)
    collect(model, data, labels_by_position=True, out=tmp_path / "b")
    # a manifest may name a code-free source's model: synthesize rebuilds it from the bundle alone
    result = synthesize(tmp_path / "b", None, classes=[0], per_class=1, config=SynthConfig.cifar(iterations=2, batch_size=1))
    assert result.images().shape == (1, 3, 16, 16)


def test_recipe_output_sink(bundle_dir: Path, tmp_path: Path):
    from sowmeta.synth import SynthResult

    class NpzSink:
        """Every batch as images.npz (uint8 N x H x W x 3) and labels."""

        def __init__(self, path: Path) -> None:
            self.path, self.parts = path, {}

        def open(self, job, plan):  # noqa: ANN001, ANN201
            return set()

        def write(self, index, result):  # noqa: ANN001, ANN201
            self.parts[index] = result

        def close(self) -> None:
            pass

        def finish(self, job, plan, seconds, resumed):  # noqa: ANN001, ANN201
            order = sorted(self.parts)
            images = torch.cat([self.parts[b].images for b in order])
            np.savez(self.path, images=images.mul(255).round().byte().permute(0, 2, 3, 1).numpy(), labels=np.array(plan.plan.labels))
            prediction = torch.cat([self.parts[b].prediction for b in order])
            confidence = torch.cat([self.parts[b].confidence for b in order])
            return SynthResult(self.path, torch.tensor(plan.plan.labels), prediction, confidence, job.labels, job.config, seconds)

    model = LoadedModel(tiny_net(4, 0), "conftest:tiny_net", "none", 4, None, Preprocessing(crop=12))
    config = SynthConfig(iterations=3, batch_size=2, lr=0.1, jitter=1)
    result = synthesize(bundle_dir, model, classes=[0, 1], per_class=2, config=config, sink=NpzSink(tmp_path / "s.npz"))
    in_memory = synthesize(bundle_dir, model, classes=[0, 1], per_class=2, config=config)
    saved = np.load(tmp_path / "s.npz")
    assert saved["images"].shape == (4, 12, 12, 3) and saved["labels"].tolist() == [0, 0, 1, 1]
    assert np.array_equal(saved["images"], in_memory.uint8.permute(0, 2, 3, 1).numpy()) and result.path == tmp_path / "s.npz"


def test_recipe_registry_backend(bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = plugin(tmp_path, monkeypatch, "memory_backend", """
        import shutil
        import tempfile
        from pathlib import Path

        from sowmeta.bundle import Bundle
        from sowmeta.errors import NotFoundError
        from sowmeta.registry import BACKENDS, BundleEntry, PullResult, PushResult

        STORE = {}  # name -> directory holding the pushed copy

        class MemoryRegistry:
            '''Bundles kept in a temporary directory for the life of the process.'''

            kind = "memory"

            def __init__(self, why):
                self.why = why

            def push(self, bundle_dir, name, *, revision=None, message=None, **options):
                Bundle.load(bundle_dir)  # verified before it is stored
                copy = Path(tempfile.mkdtemp()) / "bundle"
                shutil.copytree(bundle_dir, copy)
                STORE[name] = copy
                return PushResult(name, revision or "main", "mem-1", "memory", path=copy)

            def pull(self, name, *, revision=None, to=None):
                if name not in STORE:
                    raise NotFoundError(f"{name} is not in the memory registry")
                return PullResult(name, revision or "main", "mem-1", STORE[name], "memory")

            def list(self, *, author=None):
                return [BundleEntry(n, "mem-1", "memory", ("main",), p) for n, p in STORE.items()]

            def resolve(self, name, revision=None):
                return "mem-1"

        if "memory" not in BACKENDS:
            BACKENDS.register("memory", MemoryRegistry)
    """)
    r = cli("--plugin", name, "push", bundle_dir, "me/tiny", "--registry", "memory", "--json")
    assert r.exit_code == 0, r.output
    r = cli("--plugin", name, "list", "--registry", "memory", "--json")
    assert r.exit_code == 0 and '"me/tiny"' in r.output
    from sowmeta import registry

    pulled = registry.pull("me/tiny", registry="memory")
    assert (pulled.path / "sowmeta.json").read_bytes() == (bundle_dir / "sowmeta.json").read_bytes()
    assert registry.choose_backend("memory").kind == "memory"
    with pytest.raises(E.NotFoundError):
        registry.pull("me/other", registry="memory")


def _doc_block(title: str) -> str:
    """The first python block under a heading of docs/architecture.md, as written there."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    section = doc.split(f"### {title}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_recipe_term_added_without_engine_code(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The recipe's code, run as written (from the bundle folder's parent): its term is in the objective and does its job."""
    model = LoadedModel(tiny_net(4, 0), "conftest:tiny_net", "none", 4, None, Preprocessing(crop=12))
    monkeypatch.chdir(bundle_dir.parent)
    code = _doc_block("Add a term to the objective")
    namespace: dict[str, object] = {"model": model}
    exec(compile(code, "architecture.md", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    plain = synthesize("bundle", model, classes=[0, 1], per_class=4, config=SynthConfig.cifar(iterations=20))
    spread = lambda images: float(images.double().std(dim=1).mean())  # noqa: E731  (the channels' spread, in float64 on the stored images)
    assert spread(result.images()) > spread(plain.images()) + 0.01
