"""Options from one source: every field of SynthConfig, DistillConfig and CollectOptions is a CLI option whose help
shows each preset's default, and the value given on the command line reaches the record."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import click
import pytest
from click.testing import CliRunner

from sowmeta.cli.main import main
from sowmeta.collectors.options import DEFAULT_SHARD_BYTES, CollectOptions
from sowmeta.distillation.config import DistillConfig
from sowmeta.errors import ConfigError
from sowmeta.options import option, options_of
from sowmeta.synth.config import PRESETS, SynthConfig

RECORDS = [("synthesize", SynthConfig), ("distill", DistillConfig), ("collect", CollectOptions)]


def _flags(command: str) -> set[str]:
    return {o for p in main.commands[command].params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}


def _help_of(command: str) -> dict[str, str]:
    """Each option's help text as `sowmeta COMMAND --help` renders it, by its first flag."""
    ctx = click.Context(main.commands[command], info_name=command, parent=click.Context(main, info_name="sowmeta"))
    out = {}
    for p in main.commands[command].params:
        record = p.get_help_record(ctx) if isinstance(p, click.Option) else None
        if record is not None:
            out[p.opts[0]] = " ".join(record[1].split())
    return out


def _default_shown(text: str) -> str:
    """The bracket that ends an option's help, after click's own range hint ([x>=1]) is taken off."""
    text = re.sub(r"\s*\[[^\]]*x[<>=][^\]]*\]$", "", text)
    found = re.search(r"\[([^\[\]]*)\]$", text)
    assert found is not None, text
    return found.group(1)


def _shown(value: object) -> str:
    """How the test expects a default to read (written here, not taken from the CLI's code)."""
    if value is True or value is False:
        return "on" if value else "off"
    if value is None:
        return "unset"
    if isinstance(value, float):
        return repr(value).rstrip("0").rstrip(".") if "e" not in repr(value) else f"{value:g}"
    if isinstance(value, tuple):
        return " ".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return "none" if not value else ", ".join(f"{k}={_shown(v)}" for k, v in value.items())
    return str(value)


@pytest.mark.parametrize("command,record", RECORDS)
def test_every_field_is_an_option_of_its_command(command: str, record: type):
    flags = _flags(command)
    missing = [f.name for f, spec in options_of(record) if spec.cli_flag(f.name) not in flags]
    assert missing == []


def test_a_field_without_an_option_is_refused():
    @dataclass
    class Bare:
        described: int = field(default=1, metadata=option("Described."))
        forgotten: int = 2

    with pytest.raises(ConfigError, match="Bare.forgotten has no Option"):
        options_of(Bare)


def test_synthesize_help_shows_every_presets_default():
    """The bracket at the end of each help is what every preset (imagenet, cifar, paper) holds: one value when they agree."""
    help_of = _help_of("synthesize")
    presets = {name: SynthConfig.preset(name) for name in PRESETS.names()}
    assert set(presets) == {"imagenet", "cifar", "paper"}
    checked = 0
    for f, spec in options_of(SynthConfig):
        if spec.by_hand:
            continue
        values = {name: _shown(getattr(c, f.name)) for name, c in presets.items()}
        want = next(iter(values.values())) if len(set(values.values())) == 1 else ", ".join(f"{n} {v}" for n, v in values.items())
        text = help_of[spec.cli_flag(f.name)]
        assert _default_shown(text) == want, (f.name, text, want)
        checked += 1
    assert checked >= 30
    assert help_of["--alpha-image-var"].endswith("[imagenet 0, cifar 1, paper 0]")  # it once said "[0: off]" while the cifar preset set 1
    assert help_of["--jitter-wrap"].endswith("[imagenet on, cifar off, paper on]")


@pytest.mark.parametrize("command,record", [("distill", DistillConfig), ("collect", CollectOptions)])
def test_record_help_shows_the_records_default(command: str, record: type):
    help_of, defaults = _help_of(command), record()
    for f, spec in options_of(record):
        if not spec.by_hand:
            text = help_of[spec.cli_flag(f.name)]
            assert _default_shown(text) == _shown(getattr(defaults, f.name)), (f.name, text)
    assert DEFAULT_SHARD_BYTES == 1 << 30  # Bundle.save's default, which CollectOptions repeats without importing torch
    from sowmeta.bundle import DEFAULT_SHARD_BYTES as saved

    assert saved == DEFAULT_SHARD_BYTES


def test_values_given_on_the_command_line_reach_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Options that had none before (betas, warmup, channels-last) and renamed ones (--tap-weight, --single-class,
    --no-fingerprint-check) arrive in the SynthConfig the library gets."""
    import sowmeta.synth as synth
    from sowmeta.synth import job

    seen = {}

    class Opened:
        located, model, crop = None, None, 32

    def fake_run(bundle, model, *, config, **kw):  # noqa: ANN001, ANN003
        seen["config"] = config
        raise ConfigError("stop here")

    monkeypatch.setattr(job, "open_model", lambda *a, **k: Opened())
    monkeypatch.setattr(synth, "synthesize", fake_run)
    r = CliRunner().invoke(main, ["synthesize", "--mode", "di", "--model", "demo-cnn", "--out", str(tmp_path / "s.h5"), "--betas", "0.4", "0.8",
                                  "--warmup", "3", "--no-channels-last", "--tap-weight", "bn1=2", "--tap-weight", "layer*=0.5", "--single-class",
                                  "--no-fingerprint-check", "--alpha-image-var", "0.25", "--preset", "imagenet"])
    assert "stop here" in r.output, r.output
    c = seen["config"]
    assert (c.betas, c.warmup, c.channels_last, c.tap_weights, c.mixed) == ((0.4, 0.8), 3, False, {"bn1": 2.0, "layer*": 0.5}, False)
    assert (c.check_fingerprint, c.alpha_image_var, c.lr) == (False, 0.25, SynthConfig.imagenet().lr)
    unset = {f.name for f in dataclasses.fields(SynthConfig)} - {"mode", "betas", "warmup", "channels_last", "tap_weights", "mixed",
                                                                  "check_fingerprint", "alpha_image_var"}
    assert all(getattr(c, n) == getattr(SynthConfig.imagenet(), n) for n in unset)  # everything not given is the preset's


def test_collect_keywords_are_the_options_fields_and_nothing_else(tmp_path):
    from conftest import loaded_tiny

    from sowmeta.collectors import collect, collect_seeds

    with pytest.raises(TypeError, match="collect\\(\\) got an unexpected keyword argument 'tapz'"):
        collect(loaded_tiny(), tmp_path, tapz="auto")
    with pytest.raises(TypeError, match="collect_seeds\\(\\) got an unexpected keyword argument 'limit'"):
        collect_seeds(loaded_tiny(), tmp_path, limit=3)
    assert CollectOptions.of(CollectOptions(taps="bn-inputs"), {"fuse": True}, what="collect") == CollectOptions(taps="bn-inputs", fuse=True)
