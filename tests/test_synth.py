"""The synthesis engine end to end on a tiny model: files, resume, torchrun, modes and bad input."""

from __future__ import annotations

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

from sowmeta import errors as E
from sowmeta.collect import collect
from sowmeta.models import LoadedModel
from sowmeta.preprocess import Preprocessing
from sowmeta.synth import SynthConfig, plan_batches, synthesize
from sowmeta.synthdata import read_info

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
        x = torch.from_numpy(f["images"][:]).permute(0, 3, 1, 2).float() / 255
        conf = f["confidence"][:]
    model = loaded().module.eval()
    with torch.no_grad():
        probs = model(Preprocessing(crop=CROP).normalize(x)).softmax(dim=1)[torch.arange(6), torch.tensor([0, 0, 0, 2, 2, 2])]
    # the stored confidence was measured on the float image; the uint8 one differs by rounding only
    np.testing.assert_allclose(conf, probs.numpy(), atol=0.02)
    assert read_info(out).per_class == [3, 0, 3, 0]
    assert not out.with_name("s.h5.partial").exists()
    assert r.path == out and len(r.labels) == 6


def test_resume_equals_uninterrupted_run(bundle_dir: Path, tmp_path: Path):
    cfg = quick(seed=7)
    full = tmp_path / "full.h5"
    synthesize(bundle_dir, loaded(), classes=[0, 1], per_class=3, config=cfg, out=full)

    cut = tmp_path / "cut.h5"
    batches_seen = []

    def stop_after_two(p) -> None:  # noqa: ANN001
        if p.iteration is None:
            batches_seen.append(p.batch)
            if len(batches_seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(bundle_dir, loaded(), classes=[0, 1], per_class=3, config=cfg, out=cut, progress=stop_after_two)
    assert not cut.exists() and cut.with_name("cut.h5.partial").exists()
    r = synthesize(bundle_dir, loaded(), classes=[0, 1], per_class=3, config=cfg, out=cut)
    assert r.resumed_batches == 2
    with h5py.File(full, "r") as a, h5py.File(cut, "r") as b:
        for name in ("images", "labels", "confidence", "loss", "prediction"):
            np.testing.assert_array_equal(a[name][:], b[name][:])


def test_resume_refuses_other_settings(bundle_dir: Path, tmp_path: Path):
    out = tmp_path / "s.h5"

    def stop(p) -> None:  # noqa: ANN001
        if p.iteration is None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(bundle_dir, loaded(), classes=[0], per_class=4, config=quick(), out=out, progress=stop)
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
    from sowmeta.taps import resolve_taps, tap_hooks

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
    with pytest.raises(E.DivergenceError, match="NaN or infinite"):
        synthesize(bundle_dir, loaded(), classes=[0], per_class=2, config=quick(alpha_cc=float("inf"), iterations=30), out=tmp_path / "x.h5")
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

    seed_file = sorted((image_folder / "c0").iterdir())[0]
    (tmp_path / "seeds" / "0").mkdir(parents=True)
    shutil.copy(seed_file, tmp_path / "seeds" / "0" / seed_file.name)
    cfg = quick(init="images", init_noise=0.0, lr=1e-4)
    r = synthesize(bundle_dir, loaded(), classes=[0], per_class=1, config=cfg, init_images=tmp_path / "seeds")
    seed = torch.from_numpy(np.array(Image.open(seed_file))).permute(2, 0, 1).float() / 255
    assert float((r.images()[0] - seed).abs().max()) < 0.02
    with pytest.raises(E.ConfigError, match="no initial image"):
        synthesize(bundle_dir, loaded(), classes=[1], per_class=1, config=cfg, init_images=tmp_path / "seeds")


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
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["c0", "c2"]
    again = _cli("synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--out", str(out), "-q")
    assert again.exit_code == 1 and "already exists" in again.output
    nobundle = _cli("synthesize", "--out", str(tmp_path / "n.h5"))
    assert nobundle.exit_code == 1 and "needs --bundle" in nobundle.output
    badclass = _cli("synthesize", "--bundle", str(bundle_dir), "--model", "conftest:tiny_net", "--weights", "none", "--classes", "zebra",
                    "--out", str(tmp_path / "z.h5"))
    assert badclass.exit_code == 1 and "zebra" in badclass.output and "Traceback" not in badclass.output


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
