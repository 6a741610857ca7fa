"""Every command in README.md and docs/*.md runs as written, at tiny sizes, so a documented command cannot silently break.

Each document's ```bash blocks run in order in a sandbox of their own: ``../shared`` is a tiny generated stand-in for
the shared files (ten CIFAR-10 classes of a few noise JPEGs in the same zip layout, and cifar-resnet20/56 weights of the
same names, randomly initialized), and ``ORG``/``me`` are users of the loopback Hub test server. Nothing is rewritten
except sizes and hardware, by options appended to the command (the last value of an option wins, so the documented
spelling is still parsed): fewer images and iterations (``TINY``), the CPU for ``--device cuda``, the process itself for
``torchrun``. What a sandbox cannot run is checked for what can go wrong offline: a benchmark or study script must
accept ``--help`` and every option the document gives it, a shell script must parse, and the set-up commands
(``pip install``, ``python -m pytest -q``) must be the ones CI runs. ``-m slow`` runs the studies' CPU smoke test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HUB_USER, HUB_ORG, HUB_TOKEN = "me", "ORG", "hf_docs_test_token"

# Options appended to a sowmeta command, by subcommand: the sizes a test can afford.
TINY = {
    "synthesize": ["--per-class", "1", "--iterations", "2", "--allow-low-confidence", "--amp", "none", "--overwrite"],
    "evaluate": ["--kid-subsets", "2", "--workers", "0"],
    "distill": ["--epochs", "1", "--batch-size", "8", "--workers", "0", "--amp", "none"],
    "demo": ["--quick"],
    "collect": ["--overwrite"],  # a document may show two ways to write the same bundle
}
# Placeholders of the documents that stand for something the reader has: what the sandbox has instead.
PLACEHOLDERS = {"ORG/NAME@3f2a9c...": "ORG/cifar-resnet56/sowmeta@v1", "ORG/NAME": "ORG/cifar-resnet56/sowmeta"}
SET_UP = {"pip install", "python3 -m venv", "python -m pytest"}  # CI's own steps (.ci/run)


@dataclass
class DocCommand:
    """One command of a document: its text (continuations joined, comments dropped), where it is, and its kind."""

    doc: str
    line: int
    text: str
    env: dict[str, str] = field(default_factory=dict)  # VAR=value given before the command

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text)

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def doc_commands(path: Path) -> list[DocCommand]:
    """The commands of every ```bash block of ``path`` (a usage synopsis, with [optional] parts, is not a command)."""
    text = path.read_text(encoding="utf-8")
    commands = []
    for block in re.finditer(r"^(\s*)```bash\n(.*?)^\s*```", text, re.S | re.M):
        first = text[: block.start(2)].count("\n") + 1
        joined, start = "", None
        for i, raw in enumerate(block.group(2).splitlines()):
            line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
            if start is None:
                start = first + i
            if line.endswith("\\"):
                joined += line[:-1] + " "
                continue
            joined = (joined + line).strip()
            if joined and not re.search(r"\[--[a-z]", joined):
                commands.append(DocCommand(path.relative_to(ROOT).as_posix(), start, joined))
            joined, start = "", None
    return commands


def test_the_documents_have_commands():
    counts = {p.name: len(doc_commands(p)) for p in DOCS}
    assert counts["README.md"] >= 15 and sum(counts.values()) >= 80, counts


# --- the sandbox ------------------------------------------------------------------------------------------------------

def _noise_jpegs(root: Path, split: str, labels: list[str], per_class: int, seed: int) -> Path:
    """``split/<label>/0000.jpg ...`` noise images of 32 px, zipped as the shared CIFAR-10 files are."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    archive = root / f"{split}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for k, label in enumerate(labels):
            for i in range(per_class):
                image = (rng.random((32, 32, 3)) * 80 + 20 * k).clip(0, 255).astype("uint8")
                path = root / "tmp.jpg"
                Image.fromarray(image).save(path, quality=90)
                z.write(path, f"{split}/{label}/{i:04d}.jpg")
                path.unlink()
    return archive


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ``shared/`` in the shared files' layout: CIFAR-10 zips of noise JPEGs and randomly initialized weights."""
    import torch
    from safetensors.torch import save_file

    from sowmeta.models import load_model

    root = tmp_path_factory.mktemp("docs") / "shared"
    data, models = root / "data" / "cifar10", root / "models" / "cifar10"
    data.mkdir(parents=True)
    models.mkdir(parents=True)
    labels = list(load_model("cifar-resnet20", weights="none").labels)
    _noise_jpegs(data, "train", labels, 3, seed=0)
    _noise_jpegs(data, "test", labels, 2, seed=1)
    for depth in (20, 56):
        torch.manual_seed(depth)
        module = load_model(f"cifar-resnet{depth}", weights="none").module
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(models / f"resnet{depth}.safetensors"))
    return root


@dataclass
class Sandbox:
    """A working folder beside a ``shared/`` stand-in, with its own caches and registry and a loopback Hub."""

    work: Path
    hub_url: str
    env: dict[str, str] = field(default_factory=dict)  # the document's variables so far (W=..., export ...)


@pytest.fixture
def sandbox(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from hub_server import HubServer

    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(shared)
    for var, sub in (("SOWMETA_CACHE", "cache"), ("SOWMETA_REGISTRY", "registry"), ("HF_HOME", "hf"), ("HF_HUB_CACHE", "hf/hub"),
                     ("TORCH_HOME", "torch")):
        monkeypatch.setenv(var, str(tmp_path / "home" / sub))
    monkeypatch.delenv("SOWMETA_SHARED", raising=False)
    monkeypatch.setenv("SOWMETA_COMPILE", "0")  # compiling kernels takes a tiny run minutes on a busy machine; results are the same
    server = HubServer(tokens={HUB_TOKEN: HUB_USER}, orgs={HUB_USER: {HUB_ORG}}).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.chdir(work)
    yield Sandbox(work, server.url)
    server.stop()


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), text)


def _sowmeta_args(words: list[str]) -> list[str]:
    """The sowmeta command line a documented one runs here: its own words, then the tiny sizes and the CPU."""
    args = list(words)
    if "$(which" in args:  # torchrun ... $(which sowmeta) ARGS: the command itself, in one process
        args = args[args.index("sowmeta)") + 1:]
    elif args[0] != "sowmeta":
        args = args[args.index("sowmeta") + 1:]  # /usr/bin/time -v sowmeta ...
    else:
        args = args[1:]
    args = ["cpu" if a.startswith("cuda") and args[i - 1] == "--device" else a for i, a in enumerate(args)]
    sub = next((a for a in args if not a.startswith("-") and args[max(0, args.index(a) - 1)] != "--plugin"), "")
    extra = list(TINY.get(sub, []))
    if "resnet50" in args and sub == "collect":
        extra += ["--weights", "none", "--crop", "32"]  # no download: random weights, small inputs
    if sub == "distill" and "--workers" in args:
        extra = [a for a in extra if a != "--workers" and a != "0"] + ["--workers", "0"]
    return args + extra


HEAVY = re.compile(r"resnet50|r50-sketch|sketches/")  # 1000-class ImageNet models: a 200 MB bundle per run, so -m slow


def run_command(cmd: DocCommand, box: Sandbox, *, heavy: bool = False) -> tuple[int, str]:
    """Run one documented command in the sandbox; its exit code and output."""
    text = cmd.text
    for old, new in PLACEHOLDERS.items():
        text = text.replace(old, new)
    assign = re.fullmatch(r"(export\s+)?(\w+)=(\S*)", text)
    if assign:
        if assign.group(2) != "HF_TOKEN":  # the document's hf_... placeholder: the sandbox has its own token
            box.env[assign.group(2)] = _expand(assign.group(3), box.env)
        return 0, ""
    words = [_expand(w, box.env) for w in shlex.split(text)]
    prefix_env = {}
    while words and re.fullmatch(r"\w+=\S*", words[0]):
        key, _, value = words.pop(0).partition("=")
        prefix_env[key] = value
    if "sowmeta" in words[:1] or "$(which" in words or words[:2] == ["/usr/bin/time", "-v"]:
        if HEAVY.search(cmd.text) and not heavy:
            return _parse_only(_sowmeta_args(words))
        return _run_sowmeta(_sowmeta_args(words), box, prefix_env)
    if words[:4] == ["python", "-m", "zipfile", "-e"]:
        with zipfile.ZipFile(words[4]) as z:
            z.extractall(words[5])
        return 0, ""
    if words[0] in ("mkdir", "cp"):
        done = subprocess.run(["bash", "-c", " ".join(shlex.quote(w) for w in words).replace(" '&&' ", " && ")], capture_output=True, text=True)
        return done.returncode, done.stdout + done.stderr
    return _check_script(words)


def _parse_only(args: list[str]) -> tuple[int, str]:
    """The command line as click reads it (every option known, every value of its type, the device checked), not run."""
    import click

    from sowmeta.cli.main import main

    try:
        with main.make_context("sowmeta", list(args), resilient_parsing=False) as ctx:
            name, command, rest = main.resolve_command(ctx, [*getattr(ctx, "_protected_args", []), *ctx.args])
            command.make_context(name, rest, parent=ctx)
    except click.ClickException as exc:
        return 2, exc.format_message()
    return 0, ""


def _run_sowmeta(args: list[str], box: Sandbox, env: dict[str, str]) -> tuple[int, str]:
    if "--plugin" in args or env.get("PYTHONPATH"):  # a plugin registers names for good: a process of its own
        done = subprocess.run([sys.executable, "-m", "sowmeta.cli.main", *args], capture_output=True, text=True, timeout=600,
                              env={**os.environ, **{k: str(box.work / v) if k == "PYTHONPATH" else v for k, v in env.items()}})
        return done.returncode, done.stdout + done.stderr
    from sowmeta.cli.main import main

    result = CliRunner().invoke(main, args, env=env or None)
    return result.exit_code, result.output


def _check_script(words: list[str]) -> tuple[int, str]:
    """A benchmark or study: it exists, parses, and declares every option the document gives it (its argparse source)."""
    script = next((w for w in words if w.endswith((".py", ".sh"))), None)
    if script is None:
        return 1, f"no way to run {words} here"
    path = ROOT / script
    if not path.is_file():
        return 1, f"{script} does not exist"
    if script.endswith(".sh"):
        done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        flags = [w for w in words if w.startswith("--")]
        missing = [f for f in flags if f.split("=")[0] not in path.read_text()]
        return done.returncode or bool(missing), done.stderr + (f"{script} does not know {missing}" if missing else "")
    source = path.read_text(encoding="utf-8")
    compile(source, str(path), "exec")  # it parses
    known = set(re.findall(r"add_argument\(\s*[\"'](--[\w-]+)", source)) | set(re.findall(r"[\"'](--[\w-]+)[\"']", source))
    missing = [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in known]
    return bool(missing), f"{script} has no option {missing}" if missing else ""


# --- what each document assumes the reader already has ----------------------------------------------------------------

def _extract(box: Sandbox) -> None:
    for split in ("train", "test"):
        with zipfile.ZipFile(box.work.parent / "shared" / "data" / "cifar10" / f"{split}.zip") as z:
            z.extractall(box.work / "data" / "cifar10")


def _model_repo(box: Sandbox, depth: int = 56) -> None:
    """ORG/cifar-resnetN on the Hub, holding its weights (registry.md publishes beside them)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=box.hub_url, token=HUB_TOKEN)
    api.create_repo(f"ORG/cifar-resnet{depth}")
    weights = box.work.parent / "shared" / "models" / "cifar10" / f"resnet{depth}.safetensors"
    api.upload_file(path_or_fileobj=str(weights), path_in_repo=weights.name, repo_id=f"ORG/cifar-resnet{depth}")


def _cli(*args: str) -> None:
    from sowmeta.cli.main import main

    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0, r.output


def _bundle(out: str, model: str = "cifar-resnet56", weights: str = "../shared/models/cifar10/resnet56.safetensors", *more: str) -> None:
    _cli("collect", "--model", model, "--weights", weights, "--data", "data/cifar10/train", "--out", out, "-q", *more)


def _imagenet(box: Sandbox) -> None:
    """``imagenet/train`` and ``sketches/``: two ImageNet classes by WordNet id and label, a few noise images each."""
    from PIL import Image

    for folder, names in (("imagenet/train", ("n01440764", "n01443537")), ("sketches", ("tench", "goldfish"))):
        for name in names:
            (box.work / folder / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 40), (200 - 60 * i, 200, 200)).save(box.work / folder / name / f"{i}.png")


def _seeds(box: Sandbox, folder: str) -> None:
    (box.work / folder / "cat").mkdir(parents=True)
    (box.work / "data" / "cifar10" / "test" / "cat" / "0000.jpg").replace(box.work / folder / "cat" / "0000.jpg")
    _extract(box)  # put the moved file back


def _prepare(doc: str, box: Sandbox, heavy: bool) -> None:
    if doc in ("docs/collect.md", "docs/registry.md", "docs/synthesis.md", "docs/distill.md", "docs/results.md", "docs/benchmarks.md"):
        _extract(box)
    if doc == "docs/registry.md":
        _model_repo(box)
    if doc == "docs/collect.md":
        _imagenet(box)
        os.symlink(box.work.parent / "shared" / "models" / "cifar10" / "resnet56.safetensors", box.work / "resnet56.safetensors")
        _seeds(box, "seeds")
    if doc == "docs/synthesis.md":
        _imagenet(box)
        _bundle("runs/bundles/c56-a")
        if heavy:
            _cli("collect", "--model", "resnet50", "--weights", "none", "--crop", "32", "--data", "imagenet/train", "--out", "r50", "-q")
            _cli("push", "r50", "org/resnet50-cc", "-q")
    if doc == "docs/distill.md":
        _bundle("c56")
        _cli("synthesize", "--bundle", "c56", "--weights", "../shared/models/cifar10/resnet56.safetensors", *TINY["synthesize"], "--out", "c56-cc.h5", "-q")
    if doc == "docs/results.md":  # what its studies' scripts write, which this test does not run
        _seeds(box, "runs/cpu/seeds")
        _seeds(box, "runs/jpegstudy/seeds-lossless-half")
    if doc == "docs/architecture.md":
        _extract(box)
        _model_repo(box, 20)  # the recipes' bundles name Hub weights, which synthesize fetches by the manifest alone
        for name in ("b", "bundle"):
            _bundle(name, "cifar-resnet20", "hf://ORG/cifar-resnet20/resnet20.safetensors")
        for code in re.findall(r"```python\n(# (\w+)\.py.*?)```", (ROOT / doc).read_text(), re.S):
            (box.work / f"{code[1]}.py").write_text(code[0])


def _run_doc(doc: str, box: Sandbox, *, heavy: bool) -> list[str]:
    """Every command of ``doc`` in order (the heavy ones only parsed unless ``heavy``); the failures."""
    failed = []
    _prepare(doc, box, heavy)
    for cmd in doc_commands(ROOT / doc):
        if cmd.text.startswith("pip install git+"):  # a card's install line: the project's own repository
            from sowmeta.registry.card import INSTALL

            failed += [] if cmd.text == INSTALL else [f"{cmd}\n    -> not the card's install line {INSTALL!r}"]
            continue
        if any(cmd.text.startswith(s) or f"&& {s}" in cmd.text for s in SET_UP) and "sowmeta demo" not in cmd.text:
            assert all(s.split()[0] in (ROOT / ".ci" / "run").read_text() for s in SET_UP if s in cmd.text), cmd
            continue  # CI runs it (.ci/run installs the README's way and runs the README's test command)
        if "sowmeta demo" in cmd.text:
            cmd = DocCommand(cmd.doc, cmd.line, cmd.text.split("&& ")[-1])
        if heavy and not HEAVY.search(cmd.text):
            continue
        code, output = run_command(cmd, box, heavy=heavy)
        if code != 0:
            failed.append(f"{cmd}\n    -> exit {code}: {output.strip()[-600:]}")
    return failed


@pytest.mark.parametrize("doc", [p.relative_to(ROOT).as_posix() for p in DOCS])
def test_every_documented_command_runs(doc: str, sandbox: Sandbox):
    failed = _run_doc(doc, sandbox, heavy=False)
    assert not failed, "\n".join(failed)


@pytest.mark.slow
@pytest.mark.parametrize("doc", ["docs/collect.md", "docs/synthesis.md"])
def test_the_imagenet_commands_run(doc: str, sandbox: Sandbox):
    """The resnet50 commands, which the default run only parses, run (random weights, 32 px, a few images)."""
    failed = _run_doc(doc, sandbox, heavy=True)
    assert not failed, "\n".join(failed)


def test_the_readme_python_runs(sandbox: Sandbox):
    """README's Python block, as written, after the tour's first steps (the bundle it fetches by name is pushed)."""
    _extract(sandbox)
    _bundle("bundles/c56-cc")
    _cli("push", "bundles/c56-cc", "me/cifar-resnet56-cc", "-q")
    code = re.search(r"In Python:\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102  (the document's own code)
    assert namespace["b"].classes == [3]


def test_ci_runs_the_readme_set_up():
    """The README's install line and test command are what CI runs, so they are exercised there."""
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    install = re.search(r"pip install (torch==\S+ torchvision==\S+) -e '\.\[test\]'", readme)
    assert install and f"pip install -q {install.group(1)} -e '.[test]'" in ci
    assert "python -m pytest -q" in readme and "\npython -m pytest -q" in ci


@pytest.mark.slow
def test_the_studies_cpu_smoke_test_runs(tmp_path: Path):
    """docs/results.md's ``studies/paper_tables.sh --size tiny``, the one study that has a tiny size (needs ../shared)."""
    from conftest import shared_path

    shared = shared_path()
    done = subprocess.run(["bash", "studies/paper_tables.sh", "--size", "tiny"], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "SHARED": str(shared), "OUT": str(tmp_path / "paper-tiny")})
    assert done.returncode == 0, done.stderr[-3000:]
