"""Collectors against an independent float64 recomputation of the same features."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.datasets import ImageFolder

from sowmeta.collectors import TrainingCollector, collect, collect_seeds
from sowmeta.data.folders import read_image
from sowmeta.errors import CorruptImageError, DataError, SeedRejectedError
from sowmeta.models import load_model
from sowmeta.models.preprocess import Preprocessing
from sowmeta.models.taps import resolve_taps

from conftest import loaded_tiny, tiny_net, write_image_folder


def reference_stats(module, folder: Path, prep: Preprocessing, modules: dict[str, str], k: int):
    """Features by plain hooks over torchvision's ImageFolder; per class: concatenate, var_mean in float64;
    and the population variance of the images' own means over their positions."""
    ds = ImageFolder(str(folder), transform=prep.transform())
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
    named = dict(module.named_modules())
    hooks = []
    for tap, (mod, pos) in ((t, m.split(":")) for t, m in modules.items()):
        if pos == "in":
            hooks.append(named[mod].register_forward_pre_hook(lambda m_, a, _t=tap: feats[_t].append(a[0].double())))
        else:
            hooks.append(named[mod].register_forward_hook(lambda m_, a, o, _t=tap: feats[_t].append(o.double())))
    labels = []
    with torch.no_grad():
        for x, y in ds:
            module(x.unsqueeze(0))
            labels.append(y)
    for h in hooks:
        h.remove()
    y = torch.tensor(labels)
    out = {}
    for tap, fl in feats.items():
        f = torch.cat(fl)
        c = f.shape[1]
        mean = torch.zeros(k, c, dtype=torch.float64)
        var = torch.zeros(k, c, dtype=torch.float64)
        image_var = torch.zeros(k, c, dtype=torch.float64)
        for cls in range(k):
            sel = f[y == cls]
            if len(sel):
                v, m = torch.var_mean(sel.transpose(0, 1).reshape(c, -1), dim=1, correction=0)
                mean[cls], var[cls] = m, v
                image_var[cls] = torch.var(sel.reshape(len(sel), c, -1).mean(dim=2), dim=0, correction=0)
        out[tap] = (mean, var, torch.var_mean(f.transpose(0, 1).reshape(c, -1), dim=1, correction=0), image_var)
    return out, torch.bincount(y, minlength=k)


def assert_matches(bundle, ref, counts):
    assert bundle.counts.tolist() == counts.tolist()
    for tap, (mean, var, (gvar, gmean), image_var) in ref.items():
        s = bundle.stats[tap]
        torch.testing.assert_close(s.image_var.double(), image_var, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s.mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s.var.double(), var, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s.global_mean.double(), gmean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s.global_var.double(), gvar, rtol=1e-5, atol=1e-6)


def test_small_cnn_matches_independent_recomputation(image_folder: Path):
    model = loaded_tiny()
    bundle, report = collect(model, image_folder, taps=["bn*:in", "conv3", "fc:in"], batch_size=4)
    assert report.images == 15 and report.skipped == []
    ref, counts = reference_stats(model.module, image_folder, model.preprocessing, {"bn1": "bn1:in", "bn2": "bn2:in", "conv3": "conv3:out", "fc:in": "fc:in"}, 4)
    assert_matches(bundle, ref, counts)
    assert bundle.manifest.source.empty_classes == [3]  # the model has 4 outputs, the data 3 classes
    assert bundle.manifest.model.labels[:3] == ["c0", "c1", "c2"]


def test_torchvision_resnet18_matches_independent_recomputation(tmp_path: Path):
    folder = write_image_folder(tmp_path / "d", classes=2, per_class=3, size=40)
    torch.manual_seed(0)
    model = load_model("resnet18", weights="none", preprocessing=Preprocessing(crop=32, resize=36))
    bundle, _ = collect(model, folder, batch_size=4)
    assert len(bundle.manifest.taps) == 20 and bundle.manifest.taps[0].name == "bn1"
    picks = {"bn1": "bn1:in", "layer2.0.downsample.1": "layer2.0.downsample.1:in", "layer4.1.bn2": "layer4.1.bn2:in"}
    ref, counts = reference_stats(model.module, folder, model.preprocessing, picks, 1000)
    sub = {k: v for k, v in ref.items()}
    assert_matches(bundle, sub, counts)


def test_batch_size_invariance(image_folder: Path):
    a, _ = collect(loaded_tiny(), image_folder, batch_size=1)
    b, _ = collect(loaded_tiny(), image_folder, batch_size=15)
    for tap in a.stats:
        torch.testing.assert_close(a.stats[tap].mean, b.stats[tap].mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a.stats[tap].var, b.stats[tap].var, rtol=1e-6, atol=1e-7)


def test_fused_model_conv_outputs_equal_original_bn_outputs(image_folder: Path):
    model = loaded_tiny()
    fused, _ = collect(model, image_folder, fuse=True)
    assert fused.manifest.model.fused and [t.name for t in fused.manifest.taps] == ["conv1", "conv2", "conv3"]
    original, _ = collect(model, image_folder, taps=["bn1:out", "bn2:out"])
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        torch.testing.assert_close(fused.stats[conv].mean, original.stats[bn].mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fused.stats[conv].var, original.stats[bn].var, rtol=1e-4, atol=1e-5)


def test_training_collector_changes_nothing_and_records_exactly():
    torch.manual_seed(0)
    a = tiny_net(3).train()
    b = copy.deepcopy(a)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    collector = TrainingCollector(a, num_classes=3)
    g = torch.Generator().manual_seed(1)
    seen, ys = [], []
    hook = a.bn2.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().double()))
    for _ in range(3):
        x = torch.rand(5, 3, 8, 8, generator=g)
        y = torch.randint(0, 3, (5,), generator=g)
        with collector.observe(y):
            loss_a = F.cross_entropy(a(x), y)
        loss_b = F.cross_entropy(b(x), y)
        assert torch.equal(loss_a, loss_b)
        loss_a.backward()
        loss_b.backward()
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa.grad, pb.grad)
        opt_a.step(), opt_b.step(), opt_a.zero_grad(), opt_b.zero_grad()
        ys.append(y)
    hook.remove()
    assert all(not m._forward_pre_hooks for m in a.modules() if m is not a.bn2)
    bundle = collector.to_bundle(architecture="tiny", preprocessing=Preprocessing(crop=8))
    f, y = torch.cat(seen), torch.cat(ys)
    for k in range(3):
        v, m = torch.var_mean(f[y == k].transpose(0, 1).reshape(12, -1), dim=1, correction=0)
        torch.testing.assert_close(bundle.stats["bn2"].mean[k].double(), m, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bundle.stats["bn2"].var[k].double(), v, rtol=1e-5, atol=1e-6)
    assert bundle.manifest.source.collector == "during-training"
    # batch statistics in training shift whole images: the spread of their means would be overstated
    assert all(s.image_var is None for s in bundle.stats.values())


def test_seeds_are_inference_checked(tmp_path: Path):
    model = loaded_tiny()
    folder = write_image_folder(tmp_path / "pool", classes=3, per_class=6)
    ds = ImageFolder(str(folder), transform=model.preprocessing.transform())
    with torch.no_grad():
        preds = [(p, int(model.module(x.unsqueeze(0)).argmax())) for (p, _), (x, _) in zip(ds.samples, ds)]
    right = {}
    for p, k in preds:
        right.setdefault(k, p)
    wrong_path, wrong_pred = preds[0]
    wrong_class = (wrong_pred + 1) % 4
    seeds = {k: [p] for k, p in right.items()}
    seeds.setdefault(wrong_class, []).append(wrong_path)
    bundle, report = collect_seeds(model, seeds)
    assert report.rejected == [{"path": str(wrong_path), "class": wrong_class, "predicted": wrong_pred}]
    assert bundle.counts.tolist() == [1 if k in right else 0 for k in range(4)]
    assert bundle.manifest.source.scenario == "C" and bundle.manifest.source.rejected_seeds == report.rejected
    kept, _ = collect_seeds(model, seeds, keep_rejected=True)
    assert int(kept.counts.sum()) == len(right) + 1
    with pytest.raises(SeedRejectedError):
        collect_seeds(model, {wrong_class: [wrong_path]})


def test_bad_data_gives_typed_errors(tmp_path: Path, image_folder: Path):
    model = loaded_tiny()
    flat = tmp_path / "flat"
    flat.mkdir()
    (image_folder / "0_c0" / "img000.png").rename(flat / "x.png")
    with pytest.raises(DataError, match="not class-per-folder"):
        collect(model, flat)
    with pytest.raises(DataError, match="does not exist"):
        collect(model, tmp_path / "missing")
    many = write_image_folder(tmp_path / "many", classes=5, per_class=1)
    with pytest.raises(DataError, match="class folder '4_c4' names class 4, but the model has classes 0..3"):
        collect(model, many)


def test_corrupt_images_are_counted_or_strict(image_folder: Path):
    (image_folder / "1_c1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = image_folder / "2_c2" / "img000.png"
    (image_folder / "2_c2" / "truncated.png").write_bytes(good.read_bytes()[:60])
    bundle, report = collect(loaded_tiny(), image_folder, batch_size=4)
    assert sorted(Path(p).name for p in report.skipped) == ["broken.png", "truncated.png"]
    assert bundle.counts.tolist()[:3] == [5, 5, 5] and bundle.manifest.source.skipped_images == 2
    with pytest.raises(CorruptImageError, match="broken.png"):
        collect(loaded_tiny(), image_folder, strict=True)


def test_limit_per_class_and_empty_class_folder(image_folder: Path):
    (image_folder / "3_c3").mkdir()
    bundle, _ = collect(loaded_tiny(), image_folder, limit_per_class=2)
    assert bundle.counts.tolist() == [2, 2, 2, 0]
    assert bundle.manifest.source.empty_classes == [3] and bundle.manifest.source.images_per_class_limit == 2


def _hooked_reference(module, x: torch.Tensor, y: torch.Tensor, mod: str, k: int):
    """The input of ``mod`` for all images at once, per class: var_mean in float64."""
    feats = []
    h = dict(module.named_modules())[mod].register_forward_pre_hook(lambda m_, a: feats.append(a[0].double()))
    with torch.no_grad():
        module(x)
    h.remove()
    f = feats[0]
    c = f.shape[1]
    mean = torch.zeros(k, c, dtype=torch.float64)
    var = torch.zeros(k, c, dtype=torch.float64)
    for cls in range(k):
        if (y == cls).any():
            var[cls], mean[cls] = torch.var_mean(f[y == cls].transpose(0, 1).reshape(c, -1), dim=1, correction=0)
    return mean, var


def test_dataloader_source_matches_reference_and_checks_labels():
    from torch.utils.data import DataLoader, TensorDataset

    from sowmeta.errors import ConfigError

    g = torch.Generator().manual_seed(4)
    x = torch.randn(14, 3, 12, 12, generator=g)
    y = torch.randint(0, 3, (14,), generator=g)
    model = loaded_tiny()
    progress = []
    bundle, report = collect(model, DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True), progress=lambda d, t: progress.append((d, t)))
    assert report.images == 14 and bundle.manifest.source.data == "TensorDataset"
    assert progress[-1] == (14, 14) and [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert bundle.counts.tolist() == torch.bincount(y, minlength=4).tolist()
    for tap in ("bn1", "bn2"):
        mean, var = _hooked_reference(model.module, x, y, tap, 4)
        torch.testing.assert_close(bundle.stats[tap].mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bundle.stats[tap].var.double(), var, rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="outside the model's 4 outputs"):
        collect(model, DataLoader(TensorDataset(x, y + 2), batch_size=7))
    with pytest.raises(ConfigError, match="Subset"):
        collect(model, DataLoader(TensorDataset(x, y)), limit_per_class=2)


def test_folder_progress_reaches_the_total(image_folder: Path):
    calls = []
    collect(loaded_tiny(), image_folder, batch_size=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(4, 15), (8, 15), (12, 15), (15, 15)]


def test_several_seeds_per_class_make_scenario_b(tmp_path: Path):
    model = loaded_tiny()
    folder = write_image_folder(tmp_path / "pool", classes=2, per_class=2)
    seeds = {k: sorted((folder / f"{k}_c{k}").iterdir()) for k in range(2)}
    bundle, report = collect_seeds(model, seeds, keep_rejected=True)
    assert bundle.manifest.source.scenario == "B" and bundle.counts.tolist() == [2, 2, 0, 0]
    assert bundle.manifest.source.collector == "seeds" and report.images == 4
    x = torch.stack([model.preprocessing.transform()(read_image(p)) for k in range(2) for p in seeds[k]])
    mean, var = _hooked_reference(model.module, x, torch.tensor([0, 0, 1, 1]), "bn2", 4)
    torch.testing.assert_close(bundle.stats["bn2"].mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bundle.stats["bn2"].var.double(), var, rtol=1e-5, atol=1e-6)


def _shard_worker(rank: int, world: int, init: str, folder: str, out: str) -> None:
    import json

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        bundle, report = collect(loaded_tiny(), folder, batch_size=2)
        if rank == 0:
            bundle.save(out)
        Path(f"{out}-rank{rank}.json").write_text(json.dumps({"images": report.images, "skipped": report.skipped}))
    finally:
        dist.destroy_process_group()


def test_two_processes_with_an_empty_and_an_undecodable_shard(tmp_path: Path):
    """Rank 1 gets only an undecodable file: it still joins the merge; both ranks report the skipped file."""
    import json

    import torch.multiprocessing as mp

    from sowmeta.bundle import Bundle

    folder = write_image_folder(tmp_path / "d", classes=1, per_class=1)
    (folder / "1_c1").mkdir()
    (folder / "1_c1" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "merged"
    mp.spawn(_shard_worker, args=(2, f"file://{tmp_path / 'rdv'}", str(folder), str(out)), nprocs=2, join=True)
    single, report = collect(loaded_tiny(), folder)
    merged = Bundle.load(out)
    assert merged.counts.tolist() == single.counts.tolist() == [1, 0, 0, 0]
    assert merged.manifest.source.skipped_images == single.manifest.source.skipped_images == 1
    for rank in (0, 1):
        r = json.loads(Path(f"{out}-rank{rank}.json").read_text())
        assert r == {"images": 1, "skipped": report.skipped}
    for tap in single.stats:
        torch.testing.assert_close(merged.stats[tap].mean, single.stats[tap].mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(merged.stats[tap].var, single.stats[tap].var, rtol=1e-6, atol=1e-7)


def test_every_image_undecodable_is_a_data_error(tmp_path: Path):
    d = tmp_path / "bad" / "0_c0"
    d.mkdir(parents=True)
    (d / "a.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no image of .* could be read"):
        collect(loaded_tiny(), tmp_path / "bad")


# --- with ../shared: the pretrained CIFAR ResNet-56 on real images --------------------


def _resnet56():
    from conftest import shared_path

    return load_model("cifar-resnet56", weights=str(shared_path("models", "cifar10", "resnet56.safetensors")))


def test_scenario_a_cifar_resnet56_on_real_images(cifar_test_subset: Path):
    """Real CIFAR-10 test images: BN inputs of ResNet-56 against an independent recomputation."""
    model = _resnet56()
    bundle, report = collect(model, cifar_test_subset, batch_size=16, limit_per_class=4)
    assert report.images == 40 and bundle.counts.tolist() == [4] * 10
    assert len(bundle.manifest.taps) == 55 and bundle.manifest.model.labels[3] == "cat"
    assert [t.channels for t in bundle.manifest.taps].count(64) == 18
    ds = ImageFolder(str(cifar_test_subset), transform=model.preprocessing.transform())
    first = [i for i, (_, k) in enumerate(ds.samples) if [kk for _, kk in ds.samples[: i + 1]].count(k) <= 4]
    x = torch.stack([ds[i][0] for i in first])
    y = torch.tensor([ds.samples[i][1] for i in first])
    for tap in ("bn1", "layer2.0.bn1", "layer3.8.bn2"):
        mean, var = _hooked_reference(model.module, x, y, tap, 10)
        torch.testing.assert_close(bundle.stats[tap].mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bundle.stats[tap].var.double(), var, rtol=1e-5, atol=1e-6)


def test_scenario_c_one_real_seed(tmp_path: Path):
    """The docs' Scenario-C bundle: the first "cat" test image, accepted by ResNet-56, one row of statistics."""
    import zipfile

    from conftest import shared_path

    from sowmeta.bundle import Bundle

    model = _resnet56()
    seed = tmp_path / "seeds" / "cat" / "0000.jpg"
    seed.parent.mkdir(parents=True)
    with zipfile.ZipFile(shared_path("data", "cifar10", "test.zip")) as zf:
        seed.write_bytes(zf.read("test/cat/0000.jpg"))
    bundle, report = collect_seeds(model, tmp_path / "seeds")
    assert report.rejected == [] and bundle.manifest.source.scenario == "C"
    assert bundle.counts.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert bundle.manifest.source.empty_classes == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    x = model.preprocessing.transform()(read_image(seed)).unsqueeze(0)
    for tap in ("bn1", "layer3.8.bn2"):
        mean, var = _hooked_reference(model.module, x, torch.tensor([3]), tap, 10)
        torch.testing.assert_close(bundle.stats[tap].mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bundle.stats[tap].var.double(), var, rtol=1e-5, atol=1e-6)
    saved = Bundle.load(bundle.save(tmp_path / "c56-c1"))
    saved.check(model.module)


def test_a_module_that_runs_twice_per_forward_is_refused():
    """torchvision ResNets reuse one ReLU per block: tapping it would count every image twice."""
    from torch import nn

    from sowmeta.collectors import StatsRecorder
    from sowmeta.errors import TapError

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.relu(self.conv(self.relu(x))).mean(dim=(2, 3)))

    net = Shared().eval()
    recorder = StatsRecorder(net, resolve_taps(net, "relu:in"), 2)
    with recorder.hooks(), torch.no_grad(), pytest.raises(TapError, match="ran twice for one batch"):
        recorder.set_labels(torch.tensor([0, 1]))
        net(torch.rand(2, 3, 4, 4))
    collector = TrainingCollector(net, num_classes=2, taps="conv")
    for _ in range(2):  # one forward per observe() block is fine, block after block
        with collector.observe(torch.tensor([0, 1])):
            net(torch.rand(2, 3, 4, 4))
    assert collector.recorder.moments["conv"].images.tolist() == [2, 2]


def test_training_collector_needs_one_label_per_class():
    from sowmeta.errors import ConfigError

    net = tiny_net(3)
    collector = TrainingCollector(net, num_classes=3)
    with collector.observe(torch.tensor([0, 2])):
        net(torch.rand(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="2 labels given for 3 classes"):
        collector.to_bundle(architecture="tiny", preprocessing=Preprocessing(crop=8), labels=["a", "b"])
    b = collector.to_bundle(architecture="tiny", preprocessing=Preprocessing(crop=8), labels=["a", "b", "c"])
    assert b.counts.tolist() == [1, 0, 1] and b.labels == ["a", "b", "c"] and b.manifest.source.scenario == "A"


class Branchy(torch.nn.Module):
    """A tapped layer that runs only for some batches: its tap misses those."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.extra = torch.nn.Conv2d(4, 4, 1)
        self.fc = torch.nn.Linear(4, 3)
        self.use_extra = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.use_extra:
            x = self.extra(x)
        return self.fc(x.mean(dim=(2, 3)))


def test_recorder_folds_taps_together_and_copes_with_missed_taps_and_new_sizes():
    """Batches of several image sizes (positions per tap change) and batches where one tap does not run:
    every tap's moments still equal float64 moments of the features it saw, computed by concatenation."""
    from sowmeta.collectors import StatsRecorder

    torch.manual_seed(0)
    model = Branchy().eval()
    taps = resolve_taps(model, ["conv:out", "extra:out"])
    recorder = StatsRecorder(model, taps, 3)
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"conv": [], "extra": []}
    hooks = [getattr(model, n).register_forward_hook(lambda m, a, o, _n=n: seen[_n].append(o.double())) for n in seen]
    g = torch.Generator().manual_seed(2)
    labels: dict[str, list[torch.Tensor]] = {"conv": [], "extra": []}
    for size, use_extra in ((8, True), (12, True), (8, False), (10, True)):
        model.use_extra = use_extra
        x = torch.randn(6, 3, size, size, generator=g) * 2 + 1
        y = torch.randint(0, 3, (6,), generator=g)
        with torch.no_grad(), recorder.hooks():
            recorder.set_labels(y)
            model(x)
        recorder.set_labels(None)
        for n in seen:
            if len(seen[n]) > len(labels[n]):
                labels[n].append(y)
    for h in hooks:
        h.remove()
    moments = recorder.moments
    for n in seen:
        per_class = [torch.cat([f[y == k].transpose(0, 1).reshape(4, -1) for f, y in zip(seen[n], labels[n])], dim=1) for k in range(3)]
        for k, f in enumerate(per_class):
            v, m = torch.var_mean(f, dim=1, correction=0)
            torch.testing.assert_close(moments[n].mean[k], m, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(moments[n].var()[k], v, rtol=1e-5, atol=1e-7)
        assert int(moments[n].images.sum()) == 6 * len(labels[n])
    assert int(moments["conv"].images.sum()) == 24 and int(moments["extra"].images.sum()) == 18


def test_seeds_stream_in_batches_and_drop_the_misclassified(tmp_path: Path):
    """Seeds read and checked a few at a time: the kept ones' moments equal float64 moments of all of them at once."""
    model = loaded_tiny()
    folder = write_image_folder(tmp_path / "pool", classes=3, per_class=5)
    files = sorted(folder.rglob("*.png"))
    transform = model.preprocessing.transform()
    x = torch.stack([transform(read_image(p)) for p in files])
    with torch.no_grad():
        pred = model.module(x).argmax(1)
    claimed = torch.tensor([i % 4 for i in range(len(files))])  # some agree with the model, some do not
    seeds: dict[int, list[Path]] = {}
    for p, k in zip(files, claimed.tolist()):
        seeds.setdefault(k, []).append(p)
    order = [p for k in sorted(seeds) for p in seeds[k]]  # the order collect_seeds reads them in
    y = torch.tensor([k for k in sorted(seeds) for _ in seeds[k]])
    pred = pred[[files.index(p) for p in order]]
    x = x[[files.index(p) for p in order]]
    assert 0 < int((pred != y).sum()) < len(y)
    calls = []
    bundle, report = collect_seeds(model, seeds, batch_size=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(4, 15), (8, 15), (12, 15), (15, 15)]
    assert [r["path"] for r in report.rejected] == [str(p) for p, bad in zip(order, (pred != y).tolist()) if bad]
    keep = pred == y
    mean, var = _hooked_reference(model.module, x[keep], y[keep], "bn2", 4)
    assert bundle.counts.tolist() == torch.bincount(y[keep], minlength=4).tolist() and report.images == int(keep.sum())
    present = bundle.counts > 0
    torch.testing.assert_close(bundle.stats["bn2"].mean.double()[present], mean[present], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bundle.stats["bn2"].var.double()[present], var[present], rtol=1e-5, atol=1e-6)
    everything, _ = collect_seeds(model, seeds, batch_size=3, keep_rejected=True)
    mean, var = _hooked_reference(model.module, x, y, "bn2", 4)
    torch.testing.assert_close(everything.stats["bn2"].mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(everything.stats["bn2"].var.double(), var, rtol=1e-5, atol=1e-6)


def test_a_seed_mapping_with_labels_or_bare_paths_is_refused(tmp_path: Path):
    folder = write_image_folder(tmp_path / "pool", classes=1, per_class=1)
    image = next(folder.rglob("*.png"))
    with pytest.raises(DataError, match="class indices"):
        collect_seeds(loaded_tiny(), {"c0": [image]})
    with pytest.raises(DataError, match="wrap a single seed"):
        collect_seeds(loaded_tiny(), {0: image})
