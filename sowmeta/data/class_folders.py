"""Which model class a class folder holds: by name, never silently by position.

A folder maps to a class by, first match wins for the whole dataset: plain indices (``3``),
an index prefix (``003_cat``, ``3-cat``; refused when the name after it is another class's
label, as ``0_cat`` is for CIFAR-10), an ImageNet-1k WordNet id (``n01440764``, for
1000-class models), or the model's own label (``cat``; case, ``_``, ``-`` and spaces ignored).
When no folder names a class, sorted order (the ImageFolder convention) is accepted only if
there are exactly as many folders as classes, and said in one line; otherwise the user must
ask for it (``by_position``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..errors import DataError

__all__ = ["FolderMapping", "map_class_folders", "imagenet_wnids"]

_INDEX_RE = re.compile(r"^\d{1,7}$")
_PREFIX_RE = re.compile(r"^(\d{1,7})[_\-. ](.+)$")
_WNID_RE = re.compile(r"^n\d{8}$")


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (sorted), shipped with sowmeta."""
    text = resources.files(__package__).joinpath("imagenet1k_wnids.txt").read_text(encoding="ascii")
    return tuple(text.split())


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.casefold()).strip()


@dataclass(frozen=True)
class FolderMapping:
    """Class index of every folder (in the order given) and how it was decided."""

    indices: list[int]
    how: str  # "indices", "index prefixes", "WordNet ids", "labels", "sorted order", "sorted order (asked for)"
    note: str | None = None  # one line for the user when the mapping is a convention, not a match
    names: list[str] | None = None  # a label for every folder (``cat`` for ``003_cat``), for models without labels

    def label_of(self, i: int, folder: str) -> str:
        return self.names[i] if self.names is not None else folder


def _by_labels(folders: Sequence[str], labels: Sequence[str]) -> tuple[list[int | None], dict[str, list[int]]]:
    table: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        table.setdefault(_norm(label), []).append(i)
    return [table[_norm(f)][0] if _norm(f) in table else None for f in folders], table


def _refuse_contradictions(folders: Sequence[str], indices: list[int], names: list[str], labels: Sequence[str], what: str) -> None:
    """Refuse ``0_cat`` for a model whose class 0 is not cat but whose class 3 is: the prefix and the name disagree."""
    table: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        table.setdefault(_norm(label), []).append(i)
    for f, k, name in zip(folders, indices, names):
        named = table.get(_norm(name), [])
        if named and k not in named:
            by_prefix = f" ({labels[k]!r})" if 0 <= k < len(labels) else ""
            raise DataError(
                f"{what} {f!r} says class {k}{by_prefix} by its index prefix but class {named[0]} ({labels[named[0]]!r}) by its name; "
                f"rename it {named[0]:03d}_{name} or {k:03d}_{labels[k] if 0 <= k < len(labels) else name}"
            )


def map_class_folders(
    folders: Sequence[str],
    labels: Sequence[str] | None,
    num_classes: int,
    *,
    by_position: bool = False,
    allow_position: bool = True,
    what: str = "class folder",
) -> FolderMapping:
    """Map class folder names to the model's class indices (see the module docstring for the rules).

    Raises:
        DataError: a folder names no class (with the closest label), two folders name one class,
            an index is out of range, or the folders cannot be mapped by name and their number
            differs from the model's classes (pass ``by_position`` to use sorted order anyway).
    """
    if not folders:
        raise DataError(f"no {what}s given")
    if by_position:
        if len(folders) > num_classes:
            raise DataError(f"{len(folders)} {what}s but the model has {num_classes} classes; remove the extra folders")
        return FolderMapping(list(range(len(folders))), "sorted order (asked for)")
    indices: list[int | None]
    how: str
    names: list[str] | None = None
    if all(_INDEX_RE.match(f) for f in folders):
        indices, how = [int(f) for f in folders], "indices"
    elif all(_PREFIX_RE.match(f) for f in folders):
        matches = [_PREFIX_RE.match(f) for f in folders]
        indices, how = [int(m.group(1)) for m in matches], "index prefixes"  # type: ignore[union-attr]
        names = [m.group(2) for m in matches]  # type: ignore[union-attr]
        if labels:
            _refuse_contradictions(folders, indices, names, labels, what)  # type: ignore[arg-type]
    elif num_classes == 1000 and all(_WNID_RE.match(f) for f in folders):
        position = {w: i for i, w in enumerate(imagenet_wnids())}
        indices, how = [position.get(f) for f in folders], "WordNet ids"
        unknown = [f for f, i in zip(folders, indices) if i is None]
        if unknown:
            raise DataError(f"{what} {unknown[0]!r} is not an ImageNet-1k WordNet id; this model's classes are the 1000 of ILSVRC-2012")
    else:
        indices, how = [None] * len(folders), "labels"
        table: dict[str, list[int]] = {}
        if labels:
            indices, table = _by_labels(folders, labels)
        if all(i is None for i in indices):
            if allow_position and len(folders) == num_classes:
                first = f"{folders[0]!r} = class 0" + (f" ({labels[0]!r})" if labels else "")
                return FolderMapping(
                    list(range(len(folders))),
                    "sorted order",
                    f"the {what}s do not name the model's classes, so sorted order is used (the ImageFolder convention): {first}, ...",
                )
            hint = " or pass --labels-by-position to use sorted order" if allow_position else ""
            named = f"the model's labels (e.g. {labels[0]!r}), " if labels else ""
            raise DataError(
                f"{len(folders)} {what}s ({folders[0]!r}, ...) name none of the model's {num_classes} classes; "
                f"name them by {named}class index (3) or index prefix (003_cat){hint}"
            )
        missing = [f for f, i in zip(folders, indices) if i is None]
        if missing:
            close = difflib.get_close_matches(missing[0], list(labels or []), n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"{what} {missing[0]!r} is not one of the model's class labels{suggestion}; rename it or remove it")
        for f, i in zip(folders, indices):
            if len(table.get(_norm(f), [])) > 1:
                both = ", ".join(str(k) for k in table[_norm(f)])
                raise DataError(f"{what} {f!r} matches classes {both} (the label is not unique); name it by index, e.g. {table[_norm(f)][0]:03d}_{f}")
    out = [int(i) for i in indices]  # type: ignore[arg-type]
    bad = [f for f, i in zip(folders, out) if not 0 <= i < num_classes]
    if bad:
        raise DataError(f"{what} {bad[0]!r} names class {out[folders.index(bad[0])]}, but the model has classes 0..{num_classes - 1}")
    seen: dict[int, str] = {}
    for f, i in zip(folders, out):
        if i in seen:
            raise DataError(f"{what}s {seen[i]!r} and {f!r} both name class {i}; merge them or rename one")
        seen[i] = f
    return FolderMapping(out, how, names=names)
