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
