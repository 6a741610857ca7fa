"""The package's layout: rooms that import only rooms to their left, no import cycle, a small package root.

Every ``import`` statement counts, those inside functions too (a function-level import is an
edge like any other), and so do the name tables of the packages that import their names on first
use (``_HOME``). docs/architecture.md draws the same rooms.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sowmeta"

# The rooms from left to right: a room imports only rooms to its left, and shared utilities.
# bundle stands left of collectors because a collector writes bundles (it imports the format),
# as synth, which reads them, does; the data still flows collect -> bundle -> registry -> synth. privacy stands
# between them: a private collection clips and noises through it, and its audit reads bundles and image folders.
ROOMS = ["models", "data", "moments", "bundle", "privacy", "collectors", "registry", "synth", "evaluation", "distillation", "demo", "cli"]
SHARED_PACKAGES = ["hub"]
# The package root: the public API and small utilities every room may use.
ROOT_MODULES = {"__init__", "errors", "version", "env", "named", "lazy", "options", "atomic", "outputs", "devices", "distributed", "logits"}


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - level + 1]
    return ".".join(base + ([name] if name else []))


def _edges(modules: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """module -> the sowmeta modules it imports (a ``from X import y`` of a submodule y is an edge to X.y)."""
    edges: dict[str, set[str]] = {}
    for module, (path, is_package) in modules.items():
        out: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node.level, node.module) if node.level else (node.module or "")
                for alias in node.names:
                    if f"{target}.{alias.name}" in modules:
                        out.add(f"{target}.{alias.name}")
                    elif target in modules:
                        out.add(target)
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_HOME" for t in node.targets):
                for value in node.value.values:  # type: ignore[attr-defined]
                    out.add(_resolve(module, is_package, len(value.value) - len(value.value.lstrip(".")), value.value.lstrip(".")))
        out.discard(module)
        edges[module] = out
    return edges


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    if parts[1] in ROOMS or parts[1] in SHARED_PACKAGES:
        return parts[1]
    return "api" if parts[1] == "__init__" else "shared"


def _rank(room: str) -> int:
    if room == "shared":
        return -2
    if room in SHARED_PACKAGES:
        return -1
    return len(ROOMS) if room == "api" else ROOMS.index(room)


MODULES = _modules()
EDGES = _edges(MODULES)


def test_the_graph_is_read():
    """The reader sees the edges it must: a relative import, a function-level one, a lazy table and a submodule import."""
    assert "sowmeta.models.taps" in EDGES["sowmeta.bundle.manifest"]
    assert "sowmeta.registry" in EDGES["sowmeta"]  # inside _from_registry
    assert "sowmeta.synth" in EDGES["sowmeta"]  # _HOME
    assert "sowmeta.hub.http" in EDGES["sowmeta.hub.client"]  # from . import http


def test_no_import_cycle():
    """Depth-first search over every edge, function-level imports included: no module reaches itself."""
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(EDGES[module]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [module, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(EDGES):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_rooms_import_only_rooms_to_their_left():
    upward = [
        f"{a} -> {b}"
        for a, targets in EDGES.items()
        for b in targets
        if _room(a) != _room(b) and _rank(_room(b)) >= _rank(_room(a))
    ]
    assert upward == []


def test_shared_utilities_import_no_room():
    reached = [f"{a} -> {b}" for a, targets in EDGES.items() if _rank(_room(a)) < 0 for b in targets if _rank(_room(b)) >= 0]
    assert reached == []


def test_the_package_root_holds_the_api_and_small_utilities():
    root = {p.stem for p in PACKAGE.glob("*.py")}
    assert root == ROOT_MODULES
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert rooms == set(ROOMS) | set(SHARED_PACKAGES)
    long = [f"{name}.py: {n} lines" for name in ROOT_MODULES - {"__init__"} if (n := len((PACKAGE / f"{name}.py").read_text().splitlines())) > 250]
    assert long == []


@pytest.mark.parametrize("room", ROOMS)
def test_every_room_says_what_it_holds(room: str):
    doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text(encoding="utf-8")))
    assert doc and len(doc) > 40, room


def test_the_schema_at_the_top_is_the_one_the_package_reads():
    """``schemas/`` holds the format's JSON Schema for readers of the repository; the package ships the same bytes."""
    top = PACKAGE.parent / "schemas" / "bundle-v1.schema.json"
    assert top.read_bytes() == (PACKAGE / "bundle" / "bundle-v1.schema.json").read_bytes()


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
_NAMED_PATH = re.compile(r"^[a-z_]+/[a-z_0-9-]+\.(?:py|c|json)$|^[a-z_]+\.py$|^[a-z_]+/$")


def _architecture() -> tuple[str, str]:
    """docs/architecture.md's picture (its one fenced block without a language) and its text before the recipes."""
    text = ARCHITECTURE.read_text(encoding="utf-8").split("## Recipes", 1)[0]
    pictures = re.findall(r"^```\n(.*?)^```", text, flags=re.M | re.S)
    assert len(pictures) == 1, f"architecture.md has {len(pictures)} pictures before its recipes; it draws one"
    return pictures[0], text


def test_the_architecture_picture_names_every_room_as_on_disk():
    picture, _ = _architecture()
    drawn = set(re.findall(r"\b([a-z_]+)/", picture)) - {"sowmeta"}
    assert drawn == set(ROOMS) | set(SHARED_PACKAGES), "the picture draws exactly the rooms, by their folder names"


def test_every_file_architecture_md_names_exists():
    """Each `room/`, `room/module.py` or root `module.py` the page names is on disk under sowmeta/ (or the repository)."""
    _, text = _architecture()
    named = {m for m in re.findall(r"`([^`\s]+)`", text) if _NAMED_PATH.match(m)}
    missing = sorted(m for m in named if not (PACKAGE / m).exists() and not (PACKAGE.parent / m).exists())
    assert len(named) > 60 and missing == []
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" and p.parent != PACKAGE}
    assert sorted(modules - named) == [], "name every module of a room in docs/architecture.md's table"


def _functions() -> list[tuple[int, str]]:
    """(lines, where) of every function and method of the package, the CLI included: from ``def`` to its last line."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"))  # type: ignore[operator]
    return found


def test_no_function_is_longer_than_80_lines():
    functions = _functions()
    assert len(functions) > 500 and max(n for n, _ in functions) > 40  # the walk sees the package
    assert sorted((f"{where}: {n} lines" for n, where in functions if n > 80)) == []


def test_every_sowmeta_path_the_docs_name_exists():
    """A path into the package that a page of docs/ or the README names (``sowmeta/moments/reduce.py``) is on disk."""
    root = PACKAGE.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    named = {(page.name, m) for page in pages for m in re.findall(r"sowmeta/[a-z_0-9/]+\.(?:py|c)\b", page.read_text(encoding="utf-8"))}
    assert len(named) > 3 and sorted(f"{page}: {m}" for page, m in named if not (root / m).exists()) == []
