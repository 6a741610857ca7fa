"""One CLI grammar (issue 16): every option of every command says what it does, and --help/--version need no torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click

from sowmeta.cli.main import main


def test_every_option_has_help():
    missing = []
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip() and param.name != "help":
                missing.append(f"{name} {param.opts[0]}")
    assert missing == []


def test_every_reporting_command_has_json_and_quiet():
    for name, command in main.commands.items():
        opts = {o for p in command.params for o in getattr(p, "opts", [])}
        assert {"--json", "-q"} <= opts, name


def test_help_and_version_import_no_torch():
    code = "import sys; from sowmeta.cli.main import main; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]"
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "sowmeta.cli.main", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("sowmeta, version")


def test_model_weights_pair_is_spelled_the_same_everywhere():
    for name in ("collect", "validate", "taps", "synthesize", "evaluate", "distill"):
        opts = {o for p in main.commands[name].params for o in getattr(p, "opts", [])}
        assert {"--model", "--weights"} <= opts, name


def test_readme_links_render_on_a_package_index_page():
    """PyPI shows README.md without the repository: every image and document link must be absolute."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, "the README links nothing"
    relative = [link for link in links if not link.startswith(("https://", "http://", "#"))]
    assert not relative, f"relative links in README.md: {relative}"


def _help_line(command: str, option: str) -> str:
    """The help text of one option, as ``sowmeta COMMAND --help`` renders it (defaults included)."""
    ctx = click.Context(main.commands[command], info_name=command)
    param = next(p for p in main.commands[command].params if option in getattr(p, "opts", []))
    record = param.get_help_record(ctx)
    return "" if record is None else record[1]


def test_every_option_shows_its_default_in_help():
    """A value option's help ends with its default ([...]) or says it is required; flags are off unless given."""
    missing = []
    for name, command in main.commands.items():
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or param.is_flag or param.name == "help":
                continue
            full = _help_line(name, param.opts[0])
            text = re.sub(r"\s*\[[^\]]*(x>=|<=x|x<=|x<)[^\]]*\]\s*$", "", full)  # a range is no default
            if "[default: " not in full and not re.search(r"\[[^\]]+\]\s*$", text):
                missing.append(f"{name} {param.opts[0]}: {text[-40:]!r}")
    assert missing == []


def test_one_grammar_for_workers_amp_and_real_images():
    """collect, evaluate and distill spell, default and explain --workers alike; --amp defaults alike; real images are --reference."""
    workers = {name: _help_line(name, "--workers") for name in ("collect", "evaluate", "distill")}
    assert len({text.replace("(folders) ", "") for text in workers.values()}) == 1, workers
    assert all(p.default is None for name in workers for p in main.commands[name].params if p.name == "workers")
    amp = {name: _help_line(name, "--amp").rsplit("[", 1)[1] for name in ("synthesize", "distill")}
    assert set(amp.values()) == {"none]"}, amp
    for name in ("evaluate", "distill"):
        assert "--reference" in {o for p in main.commands[name].params for o in p.opts}, name


def test_old_spellings_still_work_hidden(tmp_path: Path):
    """distill --test and pull --to are kept as hidden aliases of --reference and --out."""
    from click.testing import CliRunner

    for command, old, new in (("distill", "--test", "--reference"), ("pull", "--to", "--out")):
        text = CliRunner().invoke(main, [command, "--help"]).output
        assert new in text and f"{old} " not in text, command
    ctx = main.commands["distill"].make_context("distill", ["--data", "d.h5", "--model", "m", "--student", "s", "--test", "real", "--out", "o"])
    assert str(ctx.params["reference"]) == "real"
    ctx = main.commands["pull"].make_context("pull", ["me/b", "--to", "copy", "--revision", "v1"])
    assert ctx.params["out"] == "copy" and ctx.params["revision"] == "v1"
    missing = CliRunner().invoke(main, ["distill", "--data", "d.h5", "--model", "m", "--student", "s", "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "--reference" in missing.output
