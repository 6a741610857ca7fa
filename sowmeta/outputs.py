"""Where sowmeta may write: outputs are checked before long work starts, and ``--overwrite``
replaces only what sowmeta itself wrote.

Each kind of output has a recognisable owner mark: a bundle directory holds ``sowmeta.json``
and only the files its manifest lists; a synthesis file is HDF5 with ``format =
sowmeta-synth``; a PNG tree holds the marker file ``.sowmeta-png`` and only class folders of
PNGs; a PNG file (grid, contact sheet) carries the text chunk ``Software: sowmeta``; a run
directory (distill) holds only the files a run writes; a demo folder holds ``.sowmeta-demo``.
Anything else is never replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from .errors import ConfigError, OutputExistsError

__all__ = ["OutputKind", "PNG_MARKER", "DEMO_MARKER", "PNG_SOFTWARE", "RUN_FILES", "owner_problem", "check_output", "check_distinct", "require_replaceable"]

OutputKind = Literal["bundle", "synth", "png-tree", "png", "run-dir", "demo-dir"]

PNG_MARKER = ".sowmeta-png"
DEMO_MARKER = ".sowmeta-demo"
PNG_SOFTWARE = "sowmeta"
_BUNDLE_EXTRA = {"sowmeta.json", "README.md"}
RUN_FILES = ("checkpoint.pt", "student.safetensors", "metrics.json")  # what a distillation run writes
_DIR_KINDS = {"bundle", "png-tree", "run-dir", "demo-dir"}
_WHAT = {
    "bundle": "a sowmeta bundle",
    "synth": "a sowmeta synthesis file",
    "png-tree": "a PNG folder sowmeta wrote",
    "png": "a PNG sowmeta wrote",
    "run-dir": "a sowmeta run directory",
    "demo-dir": "a folder `sowmeta demo` wrote",
}


def _bundle_problem(path: Path) -> str | None:
    manifest = path / "sowmeta.json"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        listed = {f["name"] for f in data["files"]} if data.get("format") == "sowmeta-bundle" else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        listed = None
    if listed is None:
        return "it holds no sowmeta bundle manifest"
    foreign = sorted(p.name for p in path.iterdir() if p.name not in listed | _BUNDLE_EXTRA)
    return f"it also holds {foreign[0]!r}, which is not part of the bundle" if foreign else None


def _synth_problem(path: Path) -> str | None:
    if not path.is_file():
        return "it is not a file"
    with open(path, "rb") as f:
        if f.read(8) != b"\x89HDF\r\n\x1a\n":
            return "it is not an HDF5 file"
    import h5py

    try:
        with h5py.File(path, "r") as h:
            fmt = h.attrs.get("format")
    except OSError:
        return "it is not a readable HDF5 file"
    fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    return None if fmt == "sowmeta-synth" else "it is an HDF5 file sowmeta did not write"


def _png_tree_problem(path: Path) -> str | None:
    if not (path / PNG_MARKER).is_file():
        return f"it has no {PNG_MARKER} marker"
    for p in path.iterdir():
        if p.name == PNG_MARKER:
            continue
        if not p.is_dir() or p.is_symlink():
            return f"it also holds {p.name!r}, which sowmeta did not write"
        for q in p.iterdir():
            if q.suffix != ".png" or not q.is_file() or q.is_symlink():
                return f"it also holds {p.name}/{q.name}, which sowmeta did not write"
    return None


def _png_problem(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            software = getattr(img, "text", {}).get("Software") if img.format == "PNG" else None
    except (OSError, ValueError, SyntaxError):
        return "it is not a PNG image"
    return None if software == PNG_SOFTWARE else "it is a file sowmeta did not write"


def _run_dir_problem(path: Path) -> str | None:
    leftovers = tuple(f".{name}.tmp-" for name in RUN_FILES)  # a killed run's unfinished atomic write
    foreign = sorted(p.name for p in path.iterdir() if p.name not in RUN_FILES and not p.name.startswith(leftovers))
    return f"it also holds {foreign[0]!r}, which a run does not write" if foreign else None


def _demo_problem(path: Path) -> str | None:
    return None if (path / DEMO_MARKER).is_file() else f"it has no {DEMO_MARKER} marker"


def owner_problem(path: str | Path, kind: OutputKind) -> str | None:
    """Why ``path`` may not be replaced as output ``kind`` (None: it is sowmeta's own, or an empty directory)."""
    p = Path(path)
    if p.is_symlink():
        return "it is a symbolic link"
    if kind in _DIR_KINDS:
        if not p.is_dir():
            return "it is a file, not a directory"
        if not any(p.iterdir()):
            return None
        problems = {"bundle": _bundle_problem, "png-tree": _png_tree_problem, "run-dir": _run_dir_problem, "demo-dir": _demo_problem}
        return problems[kind](p)
    if p.is_dir():
        return "it is a directory"
    return _synth_problem(p) if kind == "synth" else _png_problem(p)


def require_replaceable(path: str | Path, kind: OutputKind, *, what: str = "output") -> None:
    """Raise ``OutputExistsError`` unless the existing ``path`` is sowmeta's own output of ``kind``."""
    problem = owner_problem(path, kind)
    if problem is not None:
        raise OutputExistsError(
            f"{what} {path} exists and is not {_WHAT[kind]} ({problem}); --overwrite replaces only sowmeta's own outputs: choose another path"
        )


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def check_output(
    path: str | Path,
    kind: OutputKind,
    *,
    overwrite: bool,
    what: str = "--out",
    inputs: Iterable[tuple[str, str | Path | None]] = (),
) -> Path:
    """Check, before any work, that ``path`` can be written as output ``kind``; returns it as a Path.

    Refuses: an existing path without ``overwrite``; with it, anything sowmeta did not write; an
    output that is, contains or lies inside one of ``inputs`` (name, path); a destination whose
    parent is a file or not writable.
    """
    p = Path(path)
    if str(path).strip() == "":
        raise ConfigError(f"{what} is empty; pass a path")
    resolved = p.resolve()
    for name, source in inputs:
        if source is None:
            continue
        s = Path(source).resolve()
        if _inside(resolved, s) or _inside(s, resolved):
            raise ConfigError(f"{what} {p} overlaps {name} {source} (one lies inside the other); write the output somewhere else")
    if p.exists() or p.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{what} {p} already exists; choose another path or pass --overwrite")
        require_replaceable(p, kind, what=what)
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {p} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {p} cannot be written: no write permission in {parent}; choose a writable place")
    return p


def check_distinct(outputs: Iterable[tuple[str, str | Path | None]]) -> None:
    """Refuse two outputs of one command that are the same path or lie inside each other."""
    seen: list[tuple[str, Path]] = []
    for name, path in outputs:
        if path is None:
            continue
        p = Path(path).resolve()
        for other_name, other in seen:
            if _inside(p, other) or _inside(other, p):
                raise ConfigError(f"{name} {path} collides with {other_name} {other}; give each output its own path")
        seen.append((name, p))
