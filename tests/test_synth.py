"""The synthesis engine end to end on a tiny model: files, resume, torchrun, modes and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TinyNet, tiny_net

import sowmeta
from sowmeta import errors as E
from sowmeta.collectors import collect
from sowmeta.models import LoadedModel
from sowmeta.models.preprocess import Preprocessing
from sowmeta.bundle import Bundle
from sowmeta.synth import SynthConfig, losses, plan_batches, synthesize
from sowmeta.data.image_sets import read_info

CROP = 12


def loaded(seed: int = 0) -> LoadedModel:
    return LoadedModel(tiny_net(4, seed), "conftest:tiny_net", "none", 4, None, Preprocessing(crop=CROP))


@pytest.fixture
def bundle_dir(image_folder: Path, tmp_path: Path) -> Path:
    bundle, _ = collect(loaded(), image_folder, batch_size=5)
    return bundle.save(tmp_path / "bundle") or tmp_path / "bundle"


def quick(**kw) -> SynthConfig:  # noqa: ANN003
    base = dict(iterations=6, batch_size=2, lr=0.1, alpha_cc=1.0, jitter=1, first_tap_multiplier=1.0)
    return SynthConfig(**{**base, **kw})


def stop_after_first_batch(p) -> None:  # noqa: ANN001
    """A progress callback: Ctrl-C as soon as the first batch is written."""
    if p.iteration is None:
        raise KeyboardInterrupt


def test_plan_single_class_and_mixed():
    single = plan_batches([2, 0], 3, 2, mixed=False)
    assert single.labels == (2, 2, 2, 0, 0, 0)
    assert single.batches == ((0, 1), (1, 3), (3, 4), (4, 6))
    mixed = plan_batches([2, 0], 3, 4, mixed=True)
    assert mixed.labels == (2, 0, 2, 0, 2, 0)
    assert mixed.batches == ((0, 3), (3, 6))
    even = plan_batches([1], 200, 64, mixed=False)
    assert [b - a for a, b in even.batches] == [50, 50, 50, 50]
    exact = plan_batches([1, 2], 64, 64, mixed=False)
    assert exact.batches == ((0, 64), (64, 128))


def test_file_layout_and_teacher_verdict(bundle_dir: Path, tmp_path: Path):
    out = tmp_path / "s.h5"
    r = synthesize(bundle_dir, loaded(), classes=[0, 2], per_class=3, config=quick(), out=out)
    with h5py.File(out, "r") as f:
        assert f["images"].shape == (6, CROP, CROP, 3) and f["images"].dtype == np.uint8
        assert f["labels"][:].tolist() == [0, 0, 0, 2, 2, 2]
        assert f["batch_done"][:].all()
        assert f.attrs["format"] == "sowmeta-synth" and f.attrs["mode"] == "cc"
        assert f["images"].chunks is not None and f["images"].chunks[1:] == (CROP, CROP, 3)
        assert f.attrs["tool_version"] == sowmeta.__version__
        assert json.loads(f.attrs["config"]) == quick().to_dict()
        assert f.attrs["bundle"] == str(bundle_dir) and f.attrs["model"] == "conftest:tiny_net"
        x = torch.from_numpy(f["images"][:]).permute(0, 3, 1, 2).float() / 255
        conf, loss, pred = f["confidence"][:], f["loss"][:], f["prediction"][:]
        assert conf.dtype == np.float32 and loss.dtype == np.float32
    model = loaded().module.eval()
    with torch.no_grad():
        all_probs = model(Preprocessing(crop=CROP).normalize(x)).softmax(dim=1)
    probs = all_probs[torch.arange(6), torch.tensor([0, 0, 0, 2, 2, 2])]
    # the stored confidence was measured on the float image; the uint8 one differs by rounding only
    np.testing.assert_allclose(conf, probs.numpy(), atol=0.02)
    # loss is the cross-entropy of the target class: -log of its softmax probability (same logits)
    np.testing.assert_allclose(loss, -np.log(conf), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.exp(-loss), probs.numpy(), atol=0.02)
    top2 = all_probs.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1] > 0.05).numpy()  # the teacher's top-1 where rounding to uint8 cannot flip it
    np.testing.assert_array_equal(pred[clear], all_probs.argmax(dim=1).numpy()[clear])
    assert read_info(out).per_class == [3, 0, 3, 0]
    assert not out.with_name("s.h5.partial").exists()
    assert r.path == out and len(r.labels) == 6


def test_resume_equals_uninterrupted_run(bundle_dir: Path, tmp_path: Path):
    cfg = quick(seed=7)
    full = tmp_path / "full.h5"
    synthesize(bundle_dir, loaded(), classes=[0, 1], per_class=3, config=cfg, out=full)

    cut = tmp_path / "cut.h5"

    def ctrl_c_inside_batch_three(p) -> None:  # noqa: ANN001
        if p.iteration is not None and p.batch == 3:  # batch 3 optimized but not yet written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(bundle_dir, loaded(), classes=[0, 1], per_class=3, config=cfg, out=cut, progress=ctrl_c_inside_batch_three)
    assert not cut.exists()
    with h5py.File(cut.with_name("cut.h5.partial"), "r") as f:
        assert f["batch_done"][:].tolist() == [1, 1, 0, 0]  # Ctrl-C lost only the batch under way
    r = synthesize(bundle_dir, loaded(), classes=[0, 1], per_class=3, config=cfg, out=cut)
    assert r.resumed_batches == 2
    with h5py.File(full, "r") as a, h5py.File(cut, "r") as b:
        for name in ("images", "labels", "confidence", "loss", "prediction"):
            np.testing.assert_array_equal(a[name][:], b[name][:])


def test_resume_refuses_other_settings(bundle_dir: Path, tmp_path: Path):
    out = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        synthesize(bundle_dir, loaded(), classes=[0], per_class=4, config=quick(), out=out, progress=stop_after_first_batch)
    with pytest.raises(E.ConfigError, match="other settings"):
        synthesize(bundle_dir, loaded(), classes=[0], per_class=4, config=quick(lr=0.2), out=out)
    r = synthesize(bundle_dir, loaded(), classes=[0], per_class=4, config=quick(lr=0.2), out=out, overwrite=True)
    assert r.resumed_batches == 0 and out.exists()


def test_modes_and_in_memory_result(bundle_dir: Path):
    for mode in ("cc", "global", "di"):
        r = synthesize(bundle_dir, loaded(), classes=[1, 2], per_class=2, config=quick(mode=mode))
        x = r.images()
        assert x.shape == (4, 3, CROP, CROP) and 0 <= float(x.min()) and float(x.max()) <= 1
    di = synthesize(None, loaded(), classes=[1], per_class=2, config=quick(mode="di"))
    assert di.labels.tolist() == [1, 1]


def test_same_seed_same_images_other_seed_differs(bundle_dir: Path):
    a = synthesize(bundle_dir, loaded(), classes=[0], per_class=2, config=quick(seed=1)).images()
    b = synthesize(bundle_dir, loaded(), classes=[0], per_class=2, config=quick(seed=1)).images()
    c = synthesize(bundle_dir, loaded(), classes=[0], per_class=2, config=quick(seed=2)).images()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_class_conditional_statistics_are_approached(bundle_dir: Path):
    """After optimization the synthesized class's BN-input statistics are closer to that class's targets than at the start."""
    from sowmeta.bundle import Bundle
    from sowmeta.synth.losses import Segments, eq7_distance
    from sowmeta.models.taps import resolve_taps, tap_hooks

    model = loaded().module.eval()
    b = Bundle.load(bundle_dir, classes=[2])
    taps = resolve_taps(model, "bn-inputs")

    def distance(x: torch.Tensor) -> float:
        feats = {}
        with torch.no_grad(), tap_hooks(model, taps, lambda t, f: feats.__setitem__(t.name, f)):
            model(Preprocessing(crop=CROP).normalize(x))
        total = 0.0
        for t in taps:
            f = feats[t.name].double().permute(1, 0, 2, 3).flatten(1)
            v, m = torch.var_mean(f, dim=1, correction=0)
            total += float(eq7_distance(m[None], v[None], b.stats[t.name].mean.double(), b.stats[t.name].var.double(), Segments.of([len(m)])).sum())
        return total

    start = torch.Generator().manual_seed(5)
    before = distance(0.5 + 0.5 * torch.randn(8, 3, CROP, CROP, generator=start))
    r = synthesize(b, loaded(), classes=[2], per_class=8, config=quick(iterations=60, batch_size=8, alpha_ce=0.0, jitter=0, flip=False))
    assert distance(r.images()) < 0.1 * before


def test_divergence_is_a_clear_error(bundle_dir: Path, tmp_path: Path):
    from sowmeta.synth import register_feature_loss

    if "test-nan" not in losses.FEATURE_LOSSES:
        register_feature_loss("test-nan")(lambda mean, var, tm, tv, seg: seg.sum(mean) * float("nan"))
    with pytest.raises(E.DivergenceError, match="NaN or infinite"):
        synthesize(bundle_dir, loaded(), classes=[0], per_class=2, config=quick(feature_loss="test-nan", iterations=30), out=tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_bad_input(bundle_dir: Path, tmp_path: Path):
    bn_free = LoadedModel(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(4)), "x", None, 4, None, Preprocessing(crop=CROP))
    bn_free.module(torch.zeros(1, 3, CROP, CROP))
    with pytest.raises(E.SynthesisError, match="no BatchNorm"):
        synthesize(None, bn_free, classes=[0], per_class=1, config=quick(mode="di"))
    with pytest.raises(E.ModelMismatchError, match="fingerprint"):
        synthesize(bundle_dir, loaded(seed=1), classes=[0], per_class=1, config=quick())
    with pytest.raises(E.ConfigError, match="does not exist"):
        synthesize(bundle_dir, loaded(), classes=[9], per_class=1, config=quick())
    with pytest.raises(E.ConfigError, match="no statistics"):
        synthesize(bundle_dir, loaded(), classes=[3], per_class=1, config=quick())  # class 3 has no images in the folder
    out = tmp_path / "o.h5"
    out.write_bytes(b"x")
    with pytest.raises(E.OutputExistsError):
        synthesize(bundle_dir, loaded(), classes=[0], per_class=1, config=quick(), out=out)
    with pytest.raises(E.ConfigError, match="mode"):
        SynthConfig(mode="bogus")


def test_init_from_seed_images(bundle_dir: Path, image_folder: Path, tmp_path: Path):
    """Initialised from a seed image with a tiny learning rate, the result stays at the seed."""
    from PIL import Image

    seed_file = sorted((image_folder / "0_c0").iterdir())[0]
    (tmp_path / "seeds" / "0").mkdir(parents=True)
    shutil.copy(seed_file, tmp_path / "seeds" / "0" / seed_file.name)
    cfg = quick(init="images", init_noise=0.0, lr=1e-4)
    r = synthesize(bundle_dir, loaded(), classes=[0], per_class=1, config=cfg, init_images=tmp_path / "seeds")
    seed = torch.from_numpy(np.array(Image.open(seed_file))).permute(2, 0, 1).float() / 255
    assert float((r.images()[0] - seed).abs().max()) < 0.02
    with pytest.raises(E.ConfigError, match="no initial image"):
        synthesize(bundle_dir, loaded(), classes=[1], per_class=1, config=cfg, init_images=tmp_path / "seeds")


def test_resume_refuses_changed_seed_images(bundle_dir: Path, image_folder: Path, tmp_path: Path):
    """Same folder, other pixels: the unfinished run must not be continued from other seeds."""
    first, second = sorted((image_folder / "0_c0").iterdir())[:2]
    seed = tmp_path / "seeds" / "0" / "seed.png"
    seed.parent.mkdir(parents=True)
    shutil.copy(first, seed)
    cfg, out = quick(init="images"), tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        synthesize(bundle_dir, loaded(), classes=[0], per_class=4, config=cfg, out=out, init_images=seed.parents[1], progress=stop_after_first_batch)
    shutil.copy(second, seed)
    with pytest.raises(E.ConfigError, match="other settings"):
        synthesize(bundle_dir, loaded(), classes=[0], per_class=4, config=cfg, out=out, init_images=seed.parents[1])
    shutil.copy(first, seed)
    r = synthesize(bundle_dir, loaded(), classes=[0], per_class=4, config=cfg, out=out, init_images=seed.parents[1])
    assert r.resumed_batches == 1


def _cli(*args: str) -> object:
    from sowmeta.cli.main import main

    return CliRunner().invoke(main, list(args))


def test_cli_synthesize_writes_file_grid_and_pngs(bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "s.h5"
    r = _cli("synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--classes", "0,2",
             "--per-class", "2", "--iterations", "4", "--batch-size", "2", "--out", str(out), "--grid", str(tmp_path / "g.png"),
             "--png", str(tmp_path / "png"), "-q")
    assert r.exit_code == 0, r.output
    assert out.exists() and (tmp_path / "g.png").exists()
    # a folder for each synthesized class only (none for classes 1 and 3), index-prefixed: the prefix is the class index
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [".sowmeta-png", "0_c0", "2_c2"]
    from PIL import Image

    with h5py.File(out, "r") as f:
        stored, labels = f["images"][:], f["labels"][:]
    pngs = sorted((tmp_path / "png").rglob("*.png"))
    assert len(pngs) == 4 and [p.parent.name for p in pngs] == [f"{k}_c{k}" for k in labels]
    for i, p in enumerate(pngs):  # lossless copies of the file's images, in the file's order
        np.testing.assert_array_equal(np.array(Image.open(p)), stored[int(p.stem)])
        assert int(p.stem) == i
    again = _cli("synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--out", str(out), "-q")
    assert again.exit_code == 1 and "already exists" in again.output
    nobundle = _cli("synthesize", "--out", str(tmp_path / "n.h5"))
    assert nobundle.exit_code == 1 and "needs --bundle" in nobundle.output
    badclass = _cli("synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--classes", "zebra",
                    "--out", str(tmp_path / "z.h5"))
    assert badclass.exit_code == 1 and "zebra" in badclass.output and "Traceback" not in badclass.output
    spread = _cli("synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--classes", "1",
                  "--per-class", "2", "--iterations", "2", "--alpha-image-var", "0.5", "--allow-low-confidence", "--out", str(tmp_path / "iv.h5"), "-q")
    assert spread.exit_code == 0, spread.output
    assert read_info(tmp_path / "iv.h5").attrs["config"]["alpha_image_var"] == 0.5
    negative = _cli("synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none",
                    "--alpha-image-var", "-1", "--out", str(tmp_path / "neg.h5"))
    assert negative.exit_code == 1 and "alpha_image_var" in negative.output and "Traceback" not in negative.output
    nowrap = _cli("synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--classes", "1",
                  "--per-class", "2", "--iterations", "2", "--jitter", "3", "--no-jitter-wrap", "--allow-low-confidence", "--out", str(tmp_path / "nw.h5"), "-q")
    assert nowrap.exit_code == 0, nowrap.output
    assert read_info(tmp_path / "nw.h5").attrs["config"]["jitter_wrap"] is False
    wide = _cli("synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--classes", "1",
                "--jitter", "500", "--no-jitter-wrap", "--out", str(tmp_path / "wide.h5"))
    assert wide.exit_code == 1 and "--jitter-wrap" in wide.output and "Traceback" not in wide.output
    assert not any(tmp_path.glob("wide.h5*"))  # nothing half-written


def test_torchrun_two_processes_equal_single_process(bundle_dir: Path, tmp_path: Path):
    """`torchrun --nproc-per-node 2 sowmeta synthesize` (gloo) writes the same file as one process."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    sowmeta_bin = shutil.which("sowmeta", path=str(Path(sys.executable).parent))
    if torchrun is None or sowmeta_bin is None:
        pytest.skip("torchrun or the sowmeta entry point is not installed beside this python")
    args = ["synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--classes", "0,1,2",
            "--per-class", "3", "--iterations", "5", "--batch-size", "2", "--seed", "3", "-q"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", sowmeta_bin, *args, "--out", str(tmp_path / "tr.h5")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = subprocess.run([sowmeta_bin, *args, "--out", str(tmp_path / "one.h5")], env=env, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []
    with h5py.File(tmp_path / "tr.h5", "r") as a, h5py.File(tmp_path / "one.h5", "r") as b:
        for name in ("images", "labels", "prediction"):
            np.testing.assert_array_equal(a[name][:], b[name][:])


def test_registry_name_is_pulled_and_recorded(bundle_dir: Path, tmp_path: Path):
    from sowmeta.registry import push

    pushed = push(bundle_dir, "me/tiny-cc", revision="v1")
    out = tmp_path / "s.h5"
    synthesize("me/tiny-cc@v1", loaded(), classes=[1], per_class=2, config=quick(), out=out)
    with h5py.File(out, "r") as f:
        assert f.attrs["bundle"] == "me/tiny-cc"
        assert f.attrs["bundle_revision"] == "v1"
        assert f.attrs["bundle_commit"] == pushed.commit


def test_mixed_class_batches_match_each_class_group(bundle_dir: Path):
    """One batch holding two classes: each class's images approach that class's statistics (per-group matching end to end)."""
    from sowmeta.bundle import Bundle
    from sowmeta.synth.losses import Segments, eq7_distance
    from sowmeta.models.taps import resolve_taps, tap_hooks

    model = loaded().module.eval()
    b = Bundle.load(bundle_dir, classes=[0, 2])
    taps = resolve_taps(model, "bn-inputs")

    def distance(x: torch.Tensor, k: int) -> float:
        feats = {}
        with torch.no_grad(), tap_hooks(model, taps, lambda t, f: feats.__setitem__(t.name, f)):
            model(Preprocessing(crop=CROP).normalize(x))
        total = 0.0
        for t in taps:
            v, m = torch.var_mean(feats[t.name].double().permute(1, 0, 2, 3).flatten(1), dim=1, correction=0)
            s = b.stats[t.name]
            total += float(eq7_distance(m[None], v[None], s.mean[b.row(k)][None].double(), s.var[b.row(k)][None].double(), Segments.of([len(m)])).sum())
        return total

    cfg = quick(mode="cc", mixed=True, iterations=60, batch_size=8, alpha_ce=0.0, jitter=0, flip=False)
    r = synthesize(b, loaded(), classes=[0, 2], per_class=4, config=cfg)
    assert r.labels.tolist() == [0, 2] * 4  # one batch, classes interleaved
    x = r.images()
    start = 0.5 + 0.5 * torch.randn(4, 3, CROP, CROP, generator=torch.Generator().manual_seed(5))
    for k in (0, 2):
        own, other = distance(x[r.labels == k], k), distance(x[r.labels == k], 2 - k)
        assert own < 0.1 * distance(start, k)
        assert own < other  # matched to its own class, not to the batch as a whole


def test_targets_of_each_mode(bundle_dir: Path):
    """di: the BatchNorm running statistics; global: the count-weighted pool of the class statistics; cc: the class's row."""
    from sowmeta.bundle import Bundle
    from sowmeta.synth.job import build_targets

    model = loaded().module
    full = Bundle.load(bundle_dir)
    cfg = SynthConfig(first_tap_multiplier=10.0)
    di, row = build_targets("di", model, None, [0, 2], cfg)
    assert [t.tap.name for t in di] == ["bn1", "bn2"] and [t.weight for t in di] == [10.0, 1.0] and row(2) == 0
    for t, bn in zip(di, (model.bn1, model.bn2)):
        torch.testing.assert_close(t.mean[0], bn.running_mean)
        torch.testing.assert_close(t.var[0], bn.running_var)
    n = full.counts.double()
    gl, row = build_targets("global", model, full, [0, 2], cfg)
    assert row(0) == row(2) == 0
    for t in gl:
        s = full.stats[t.tap.name]
        mean = (n[:, None] * s.mean.double()).sum(0) / n.sum()
        var = (n[:, None] * (s.var.double() + s.mean.double() ** 2)).sum(0) / n.sum() - mean**2
        torch.testing.assert_close(t.mean[0].double(), mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(t.var[0].double(), var, rtol=1e-4, atol=1e-5)
    part = Bundle.load(bundle_dir, classes=[0, 2])
    cc, row = build_targets("cc", model, part, [0, 2], SynthConfig(tap_weights={"bn2": 0.5}))
    assert [t.weight for t in cc] == [1.0, 0.5]
    for t in cc:
        for k in (0, 2):
            torch.testing.assert_close(t.mean[row(k)], full.stats[t.tap.name].mean[full.row(k)])
            torch.testing.assert_close(t.var[row(k)], full.stats[t.tap.name].var[full.row(k)])


def test_save_every_keeps_intermediate_images(bundle_dir: Path, tmp_path: Path):
    cfg = quick(iterations=6, seed=2)
    synthesize(bundle_dir, loaded(), classes=[0, 1], per_class=2, config=cfg, out=tmp_path / "plain.h5")
    synthesize(bundle_dir, loaded(), classes=[0, 1], per_class=2, config=cfg.replace(save_every=2), out=tmp_path / "snap.h5")
    with h5py.File(tmp_path / "plain.h5", "r") as a, h5py.File(tmp_path / "snap.h5", "r") as b:
        assert "snapshots" not in a
        assert b["snapshots"].shape == (2, 4, CROP, CROP, 3) and b["snapshots"].dtype == np.uint8
        assert list(b["snapshots"].attrs["iterations"]) == [2, 4]  # the final state is `images`
        np.testing.assert_array_equal(a["images"][:], b["images"][:])  # keeping snapshots does not change the run
        snaps, final = b["snapshots"][:].astype(int), b["images"][:].astype(int)
    for s in range(2):
        for i in range(4):  # every image has its snapshots (none left at the fill value) and they evolve
            assert snaps[s, i].max() > 0 and (snaps[s, i] != final[i]).any()
    assert (snaps[0] != snaps[1]).any()


def test_model_comes_from_the_bundle_but_never_code_it_names(image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sowmeta.models import load_model

    weights = tmp_path / "tiny.pt"
    torch.save(tiny_net(4, 0).state_dict(), weights)
    teacher = load_model("conftest:tiny_net", weights=str(weights), num_classes=4, preprocessing=Preprocessing(crop=CROP))
    bundle, _ = collect(teacher, image_folder, batch_size=5)
    bundle.save(tmp_path / "b")
    assert bundle.manifest.model.architecture == "custom" and bundle.manifest.model.factory == "conftest:tiny_net"
    with pytest.raises(E.ModelError, match="never runs from a manifest; pass --model conftest:tiny_net"):
        synthesize(tmp_path / "b", None, classes=[1], per_class=2, config=quick())
    explicit = synthesize(tmp_path / "b", loaded(), classes=[1], per_class=2, config=quick())
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "cli.h5"
    r = _cli("synthesize", "--bundle", str(tmp_path / "b"), "--model", "conftest:tiny_net", "--weights", str(weights),
             "--classes", "1", "--per-class", "2", "--iterations", "3", "--out", str(out), "-q", "--allow-low-confidence")
    assert r.exit_code == 0, r.output
    with h5py.File(out, "r") as f:
        assert f.attrs["model"] == "conftest:tiny_net" and f.attrs["weights"] == "tiny.pt"  # no machine path
    # a built-in architecture is rebuilt from the manifest; a weights file it names is never opened: --weights gives it
    demo = load_model("demo-cnn", weights=None)
    demo_w = tmp_path / "demo.safetensors"
    from safetensors.torch import save_file

    save_file(demo.module.state_dict(), str(demo_w))
    demo = load_model("demo-cnn", weights=str(demo_w))
    collect(demo, image_folder, batch_size=5, out=tmp_path / "d")
    with pytest.raises(E.WeightsError, match="does not fetch from a manifest; pass weights=FILE"):
        synthesize(tmp_path / "d", None, classes=[1], per_class=2, config=quick())
    from sowmeta.bundle import load_model_for

    by_record = synthesize(tmp_path / "d", load_model_for(Bundle.read_manifest(tmp_path / "d"), weights=str(demo_w)), classes=[1], per_class=2, config=quick())
    by_hand = synthesize(tmp_path / "d", demo, classes=[1], per_class=2, config=quick())
    assert torch.equal(by_record.images(), by_hand.images()) and explicit.images().shape[0] == 2


def test_progress_display_shows_batch_iteration_terms_and_eta():
    import io

    from rich.console import Console

    from sowmeta.cli.synth_cmds import _live_display
    from sowmeta.synth import IterationInfo, SynthProgress

    buf = io.StringIO()
    bar, update = _live_display(Console(file=buf, force_terminal=True, width=200, color_system=None), quiet=False)
    update(SynthProgress(1, 3, 0, 12, IterationInfo(40, 100, {"ce": 1.25, "stats": 0.5, "total": 2.0})))
    update(SynthProgress(2, 3, 4, 12, None))
    bar.stop()
    text = buf.getvalue()
    for part in ("batch 2/3", "4/12", "40/100", "ce 1.25", "stats 0.5", "total 2", "ETA"):
        assert part in text, (part, text)
    quiet_buf = io.StringIO()
    bar, update = _live_display(Console(file=quiet_buf, force_terminal=True), quiet=True)
    update(SynthProgress(1, 3, 0, 12, IterationInfo(40, 100, {"ce": 1.25})))
    bar.stop()
    assert "ce 1.25" not in quiet_buf.getvalue()


def test_cli_bad_options_are_one_line_errors(bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    base = ["synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--classes", "0",
            "--per-class", "1", "--iterations", "2", "--out", str(tmp_path / "x.h5")]
    for extra, message in ((["--tap-weight", "bn1"], "--tap-weight takes TAP=WEIGHT"), (["--tap-weight", "layer9=2"], "matches no tap"),
                           (["--init", str(tmp_path / "nowhere")], "is not a directory"), (["--alpha-tv", "-1"], "alpha_tv must be a number in [0, "),
                           (["--mode", "di", "--model", "tests.nothing:x"], "cannot import factory")):
        r = _cli(*base, *extra)
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, (extra, r.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "data"]  # nothing written, not even a partial file


def test_test_fixture_has_the_writers_layout(bundle_dir: Path, tmp_path: Path):
    """tests/synth_files.py (used by the evaluate/distill tests) writes a subset of the real layout, with the same dtypes."""
    from synth_files import write_synth_h5

    real = tmp_path / "real.h5"
    synthesize(bundle_dir, loaded(), classes=[0], per_class=2, config=quick(), out=real)
    fake = write_synth_h5(tmp_path / "fake.h5", classes=2, per_class=2, size=CROP)
    with h5py.File(real, "r") as r, h5py.File(fake, "r") as f:
        for name, ds in f.items():
            assert name in r and r[name].dtype == ds.dtype and r[name].shape[1:] == ds.shape[1:], name
        assert set(f.attrs) <= set(r.attrs)


def test_sheet_places_tiles_like_make_grid_and_adds_labels():
    from torchvision.utils import make_grid

    from sowmeta.data.export import contact_sheet, sheet

    g = torch.Generator().manual_seed(0)
    tiles = torch.randint(0, 256, (5, 3, 6, 7), generator=g, dtype=torch.uint8)
    plain = sheet([list(tiles[:3]), list(tiles[3:])], pad=2)
    expected = make_grid(tiles.float() / 255, nrow=3, padding=2, pad_value=1.0).mul(255).round().to(torch.uint8)
    assert torch.equal(plain, expected)
    labels = torch.tensor([0, 0, 1, 1, 1])
    named = contact_sheet(tiles.float() / 255, labels, per_class=3, names=["cat", "dog"], scale=2)
    assert named.shape[1] == 2 * (12 + 2) + 2 and named.shape[2] > 3 * (14 + 2) + 2  # a label strip on the left
    blank = named[:, 2 : 2 + 12, -16:-2]  # the cat row has two images: its third tile stays white
    assert torch.equal(blank, torch.full_like(blank, 255))
    assert torch.equal(named[:, 16 : 16 + 12, -16:-2], tiles[4].repeat_interleave(2, 1).repeat_interleave(2, 2))  # dog's third, 2x


def test_image_var_term_spreads_the_images_like_the_class(bundle_dir: Path):
    """With the spread term the per-image means of a class's images at the first tap vary about as much as
    the bundle says; without it they vary far less (the pooled variance alone lets each image take it all)."""
    from sowmeta.models.taps import resolve_taps, tap_hooks

    model = loaded().module.eval()
    b = Bundle.load(bundle_dir, classes=[2])
    tap = resolve_taps(model, "bn-inputs")[0]
    target = b.stats[tap.name].image_var[0].double()

    def spread(x: torch.Tensor) -> torch.Tensor:
        feats = {}
        with torch.no_grad(), tap_hooks(model, [tap], lambda t, f: feats.__setitem__(t.name, f)):
            model(Preprocessing(crop=CROP).normalize(x))
        return torch.var(feats[tap.name].double().mean(dim=(2, 3)), dim=0, correction=1)

    cfg = quick(iterations=150, batch_size=8, alpha_ce=0.0, jitter=0, flip=False, first_tap_multiplier=10.0)
    off = spread(synthesize(b, loaded(), classes=[2], per_class=8, config=cfg).images())
    on = spread(synthesize(b, loaded(), classes=[2], per_class=8, config=cfg.replace(alpha_image_var=1.0)).images())
    err = lambda s: float((s - target).norm() / target.norm())  # noqa: E731
    assert err(on) < 0.5 * err(off), (err(on), err(off))


def test_a_bundle_without_image_var_is_noted_when_the_term_is_asked_for(bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    old = Bundle.load(bundle_dir)
    for s in old.stats.values():
        s.image_var = None
    old.save(tmp_path / "old")
    heard: list[str] = []
    cfg = quick(iterations=2, batch_size=1)
    synthesize(tmp_path / "old", loaded(), classes=[0], per_class=1, config=cfg, notice=heard.append)
    synthesize(bundle_dir, loaded(), classes=[0], per_class=1, config=cfg.replace(alpha_image_var=1.0), notice=heard.append)
    assert heard == []
    synthesize(tmp_path / "old", loaded(), classes=[0], per_class=1, config=cfg.replace(alpha_image_var=1.0), notice=heard.append)
    assert len(heard) == 1 and "before format 1.3" in heard[0] and "collect it again" in heard[0]
    with caplog.at_level("WARNING"):
        synthesize(tmp_path / "old", loaded(), classes=[0], per_class=1, config=cfg.replace(alpha_image_var=1.0))
    assert "before format 1.3" in caplog.text
    from sowmeta.collectors import TrainingCollector

    module = loaded().module
    collector = TrainingCollector(module, num_classes=4)
    with torch.no_grad(), collector.observe(torch.arange(8) % 4):
        module(torch.rand(8, 3, CROP, CROP, generator=torch.Generator().manual_seed(0)))
    collector.to_bundle(architecture="conftest:tiny_net", preprocessing=Preprocessing(crop=CROP)).save(tmp_path / "trained")
    heard.clear()
    synthesize(tmp_path / "trained", loaded(), classes=[0], per_class=1, config=cfg.replace(alpha_image_var=1.0), notice=heard.append)
    assert len(heard) == 1 and "during training" in heard[0] and "after training" in heard[0]


def test_cli_grid_has_as_many_columns_as_images_per_class(bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """--per-class 1 makes a one-column sheet (not eight columns of blanks): the same PNG as a one-per-row contact sheet."""
    from PIL import Image

    from sowmeta.data.export import contact_sheet, readable_scale
    from sowmeta.data.image_sets import load_images

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out, grid = tmp_path / "s.h5", tmp_path / "g.png"
    r = _cli("synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--classes", "0,2",
             "--per-class", "1", "--iterations", "2", "--allow-low-confidence", "--out", str(out), "--grid", str(grid), "-q")
    assert r.exit_code == 0, r.output
    images, labels = load_images(out)
    one = contact_sheet(images, labels, per_class=1, scale=readable_scale(images.shape[-1]))
    eight = contact_sheet(images, labels, per_class=8, scale=readable_scale(images.shape[-1]))
    width = Image.open(grid).size[0]
    assert width < eight.shape[-1] and width >= one.shape[-1]
