"""What the CLI prints: progress on stderr (bars on a terminal, plain lines in a log, nothing with -q, huggingface_hub's bars
included), whole identifiers off a terminal, plain words, a quiet end on a closed pipe, and a feature network that no cache picks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from registry_fixtures import make_bundle, registry_env  # noqa: F401  (fixtures)
from rich.console import Console

from sowmeta.cli.main import main
from sowmeta.cli.progress import LiveProgress


def _progress_text(terminal: bool, quiet: bool = False) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100)
    with LiveProgress(console, ["collect"], quiet=quiet) as bar:
        for done in (0, 5, 10):
            bar.update("collect", completed=done, total=10, info="512 img/s")
    return out.getvalue()


def test_progress_in_a_log_is_plain_lines_and_quiet_is_nothing():
    log = _progress_text(terminal=False)
    lines = log.splitlines()
    assert lines[0].startswith("collect 0/10 ") and lines[-1].startswith("collect 10/10 ") and "512 img/s" in lines[-1]
    assert len(lines) == 2  # throttled: the first update and the finish, not every update
    assert not any(ch in log for ch in "━\x1b…")  # no bar glyphs, no escape codes, nothing cut short
    assert "━" in _progress_text(terminal=True)
    assert _progress_text(terminal=False, quiet=True) == "" and _progress_text(terminal=True, quiet=True) == ""


def test_quiet_silences_huggingface_hub_bars(monkeypatch: pytest.MonkeyPatch):
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    enable_progress_bars()
    try:
        assert not are_progress_bars_disabled()
        assert CliRunner().invoke(main, ["list", "-q"]).exit_code == 0
        assert are_progress_bars_disabled() and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    finally:
        enable_progress_bars()


def test_progress_goes_to_stderr_and_results_to_stdout(tmp_path: Path):
    from conftest import write_image_folder

    data = write_image_folder(tmp_path / "data", classes=2, per_class=2, size=12)
    r = CliRunner().invoke(main, ["collect", "--model", "conftest:tiny_net", "--weights", "none", "--data", str(data),
                                  "--out", str(tmp_path / "b"), "--crop", "12", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("wrote ") and len(r.stdout.strip().splitlines()) == 1
    assert "collect 4/4 " in r.stderr


def test_inspect_speaks_plainly_and_keeps_the_fingerprint_whole(make_bundle):  # noqa: F811
    from sowmeta.bundle import Bundle

    src = make_bundle(seed=1)
    m = Bundle.read_manifest(src).model
    out = CliRunner().invoke(main, ["inspect", str(src)]).stdout
    assert m.fingerprint in out and "BatchNorm not fused" in out and "fused False" not in out
    assert " 1 file, " in out and "1 files" not in out and "weights None" not in out


def test_a_closed_pipe_ends_quietly():
    """`sowmeta models | head`: the reader left; no 'Broken pipe' error, exit 0."""
    r, w = os.pipe()
    os.close(r)  # every write fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "sowmeta.cli.main", "models", "--json"], stdout=w, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(w)
    assert (done.returncode, done.stderr) == (0, b"")


def test_models_lists_timm_names_for_a_timm_pattern():
    pytest.importorskip("timm")
    import timm

    r = CliRunner().invoke(main, ["models", "timm:resnet1*"])
    assert r.exit_code == 0 and r.stdout.split() == ["timm:" + n for n in timm.list_models("resnet1*")] != []
    none = CliRunner().invoke(main, ["models", "hf-hub:*"])
    assert none.exit_code == 0 and none.stdout == "" and "hf-hub:ORG/NAME" in none.stderr
    assert "timm:" in CliRunner().invoke(main, ["synthesize", "--help"]).stdout


def test_the_feature_network_is_never_chosen_by_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """With Inception-V3's weights in torch's cache, FD and KID still use the first model unless a feature model is given."""
    import torch
    from conftest import tiny_net, write_image_folder
    from synth_files import write_synth_h5
    from torchvision.models import Inception_V3_Weights

    from sowmeta.evaluation import evaluate
    from sowmeta.models import LoadedModel
    from sowmeta.models.preprocess import Preprocessing

    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(Inception_V3_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"not really inception")  # were it read, loading would fail
    model = LoadedModel(tiny_net(4, seed=2), "conftest:tiny_net", None, 4, None, Preprocessing(crop=12, resize=None))
    h5 = write_synth_h5(tmp_path / "s.h5", classes=4, per_class=3)
    report = evaluate(h5, [model], reference=write_image_folder(tmp_path / "real", classes=4, per_class=3), kid_subsets=2)
    assert report.feature_network == report.accuracy[0].network


def test_library_errors_speak_the_api_and_the_cli_speaks_options():
    """A Python caller is told ``weights=FILE``; the same failure on the command line says ``--weights FILE``."""
    from sowmeta import errors as E
    from sowmeta.cli.terminal import as_cli_text
    from sowmeta.models import load_model

    with pytest.raises(E.WeightsError) as caught:
        load_model("cifar-resnet20", weights="DEFAULT")
    assert "weights=FILE" in str(caught.value) and "--" not in str(caught.value)
    r = CliRunner().invoke(main, ["taps", "cifar-resnet20", "--weights", "DEFAULT"])
    assert r.exit_code == 1 and "--weights FILE" in r.stderr and "weights=" not in r.stderr, r.output
    flags = {"registry": "--registry", "with_weights": "--with-weights", "update_model_card": "--update-model-card"}
    assert as_cli_text("pull it (registry='hub'), push with_weights=FILE, update_model_card=True; sha256=ab", flags) == (
        "pull it (--registry hub), push --with-weights FILE, --update-model-card; sha256=ab")
