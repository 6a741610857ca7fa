"""The moments dispatch table (``sowmeta.moments.dispatch``): one implementation per map, chosen in one place, said once per run."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import loaded_tiny, tiny_net, write_image_folder

from sowmeta.collectors import collect
from sowmeta.models.preprocess import Preprocessing
from sowmeta.models.taps import resolve_taps
from sowmeta.moments import dispatch, native
from sowmeta.synth.config import SynthConfig
from sowmeta.synth.engine import Inverter, TapTarget

needs_kernel = pytest.mark.skipif(not native.available(), reason="no C compiler or OpenMP runtime: the fused kernel is off here")


def test_the_table_names_every_route_once_and_each_contract_has_a_last_resort():
    names = [i.name for i in dispatch.TABLE]
    assert names == ["native", "columns", "welford", "compiled", "eager"]
    assert dispatch.TABLE[-1].central and dispatch.TABLE[-1].raw  # eager computes anything


def test_the_first_row_that_applies_is_chosen(monkeypatch: pytest.MonkeyPatch):
    small, large = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)
    assert dispatch.choose(torch.randn(2, 3), "raw") == "columns"
    assert dispatch.choose(torch.randn(2, 3, 1, 1), "central", positions=1) == "columns"
    assert dispatch.choose(torch.randn(2, 3, 1, 1), "raw") == "eager"  # the differentiable route reduces even one position
    assert dispatch.choose(small, "central", positions=16) == "eager"
    monkeypatch.setattr(dispatch, "COMPILE_MIN_ELEMENTS", {"cpu": large.numel(), "cuda": 0})
    monkeypatch.setattr(dispatch.reduce._KERNELS, "enabled", True)
    monkeypatch.delenv("SOWMETA_COMPILE", raising=False)
    assert dispatch.choose(small, "raw") == "eager" and dispatch.choose(large, "raw") == "compiled"
    with dispatch.switched_off("compiled"):
        assert dispatch.choose(large, "raw") == "eager"
    assert dispatch.choose(large, "raw") == "compiled"
    monkeypatch.setenv("SOWMETA_COMPILE", "0")
    assert dispatch.choose(large, "central", positions=64) == "eager"
    with pytest.raises(ValueError, match="eager"):
        with dispatch.switched_off("eager"):
            pass


@needs_kernel
def test_native_applies_only_where_the_kernel_computes_the_call():
    x = torch.randn(2, 3, 4, 4)
    stats = {"running_mean": torch.zeros(3), "running_var": torch.ones(3)}
    with torch.no_grad():
        assert dispatch.native_applies(x, "central", training=False, **stats)
        assert not dispatch.native_applies(x, "central", training=True, **stats)
        assert not dispatch.native_applies(x, "central", training=False, running_mean=None, running_var=None)
        assert not dispatch.native_applies(x.double(), "central", training=False, **stats)
        assert not dispatch.native_applies(x.to(memory_format=torch.channels_last), "central", training=False, **stats)
        assert not dispatch.native_applies(torch.randn(2, 3), "central", training=False, **stats)  # no positions
        assert not dispatch.native_applies(x, "raw", training=False, **stats)  # synthesis needs autograd
        with dispatch.switched_off("native"):
            assert not dispatch.native_applies(x, "central", training=False, **stats)
    assert not dispatch.native_applies(x, "central", training=False, **stats)  # collection runs outside autograd
    assert dispatch.native_applies(x, "raw", training=False, **stats)
    assert not dispatch.native_applies(x, "raw", training=False, weight=torch.ones(3, requires_grad=True), **stats)


def test_collect_says_once_which_implementation_computed_each_tap(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """One INFO line for a run of three batches, counting the tiny net's three BatchNorm/conv taps by route."""
    folder = write_image_folder(tmp_path / "data", classes=4, per_class=3, size=12)
    with caplog.at_level(logging.INFO, logger="sowmeta.moments.dispatch"):
        collect(loaded_tiny(), folder, batch_size=4, taps="bn1:in,bn2:in,conv3")
    lines = [r.getMessage() for r in caplog.records if r.name == "sowmeta.moments.dispatch"]
    assert len(lines) == 1 and lines[0].startswith("per-image moments of 3 taps (collect):")
    expected = "2 by native (the fused BatchNorm kernel), 1 by eager" if native.available() else "3 by eager"
    assert expected in lines[0], lines[0]
    with dispatch.switched_off("native"), caplog.at_level(logging.INFO, logger="sowmeta.moments.dispatch"):
        caplog.clear()
        collect(loaded_tiny(), folder, batch_size=4, taps="bn1:in,bn2:in,conv3")
    assert "3 by eager (eager ops)" in caplog.text


def test_synthesis_says_once_which_implementation_computed_each_tap(caplog: pytest.LogCaptureFixture):
    model = tiny_net(4)
    taps = resolve_taps(model, "bn-inputs")
    targets = [TapTarget(t, torch.zeros(2, c), torch.ones(2, c)) for t, c in zip(taps, (6, 12))]
    inverter = Inverter(model, targets, Preprocessing(crop=12), SynthConfig(batch_size=2, iterations=3, jitter=0))
    with caplog.at_level(logging.INFO, logger="sowmeta.moments.dispatch"):
        for seed in (0, 1):  # two batches of one run: one line
            inverter.run(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.rand(2, 3, 12, 12), seed=seed)
    lines = [r.getMessage() for r in caplog.records if r.name == "sowmeta.moments.dispatch"]
    route = "native" if native.available() else "eager"
    assert lines == [f"per-image moments of 2 taps (synthesize): 2 by {route} ({dict((i.name, i.what) for i in dispatch.TABLE)[route]})"]


def test_the_line_is_what_sowmeta_v_shows(tmp_path: Path):
    folder = write_image_folder(tmp_path / "data", classes=4, per_class=2, size=12)
    code = ("import sys, conftest; from sowmeta.models import register_model; "
            "register_model('tiny-dispatch')(lambda name, weights, num_classes: conftest.loaded_tiny()); "
            "from sowmeta.cli.main import main; sys.argv = ['sowmeta', *sys.argv[1:]]; main()")
    args = ["--model", "tiny-dispatch", "--weights", "none", "--data", str(folder), "--out", str(tmp_path / "b"), "-q"]
    quiet = subprocess.run([sys.executable, "-c", code, "collect", *args], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert quiet.returncode == 0, quiet.stderr
    assert "per-image moments" not in quiet.stderr
    verbose = subprocess.run([sys.executable, "-c", code, "-v", "collect", *args[:-3], "--out", str(tmp_path / "c"), "-q"],
                             capture_output=True, text=True, cwd=Path(__file__).parent)
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stderr.count("per-image moments of") == 1, verbose.stderr
