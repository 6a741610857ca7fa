"""Classes named by index or by label, as users give them (``--classes 3,dog``, ``classes=[3, "dog"]``).

Labels need not be unique: ImageNet-1k names both class 134 (the bird) and class 517 (the
machine) ``crane``. A label that names several classes is refused with their indices, never
resolved silently to one of them; so is a value that is neither an integer nor a label
(``3.0``, ``True``).
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Iterable, Sequence

from ..errors import ConfigError

__all__ = ["resolve_classes"]


def resolve_classes(
    classes: Iterable[object] | None, labels: Sequence[str] | None, num_classes: int, *, unique: bool = True, where: str = "the model"
) -> list[int]:
    """Class indices, in the order given, from indices (ints, or digit strings) and labels; ``None`` means every class.

    Raises:
        ConfigError: an index out of range, an unknown or ambiguous label, a value that is
            neither (a float, a bool), or (with ``unique``) a class given twice.
    """
    if classes is None:
        return list(range(num_classes))
    if isinstance(classes, (str, bytes)):
        classes = [classes]
    by_label: dict[str, list[int]] = {}
    for i, name in enumerate(labels or []):
        by_label.setdefault(name, []).append(i)
    out = [_one(c, by_label, num_classes, where) for c in classes]
    if unique and len(set(out)) != len(out):
        twice = next(k for i, k in enumerate(out) if k in out[:i])
        raise ConfigError(f"class {twice} is listed twice; list every class once")
    return out


def _one(c: object, by_label: dict[str, list[int]], num_classes: int, where: str) -> int:
    if isinstance(c, str):
        text = c.strip()
        hits = by_label.get(c, by_label.get(text, []))
        if text.isdigit() and int(text) not in hits and hits:
            raise ConfigError(f"class {c!r} is both the index {int(text)} and the label of class {hits[0]}; pass the index as a number")
        if len(hits) > 1:
            listed = " and ".join(str(k) for k in hits)
            raise ConfigError(f"class {c!r} is ambiguous: classes {listed} of {where} are all labelled {c!r}; pass the index ({hits[0]}, ...)")
        if hits:
            return hits[0]
        if text.lstrip("-").isdigit():
            return _index(int(text), num_classes, where)
        close = difflib.get_close_matches(c, list(by_label), n=1)
        hint = f"did you mean {close[0]!r}?" if close else (f"e.g. {next(iter(by_label))!r}" if by_label else f"{where} has no labels")
        raise ConfigError(f"class {c!r} is neither a class index nor a label of {where} ({hint})")
    if isinstance(c, (bool, float)):
        raise ConfigError(f"class {c!r} is not a class index (an integer) nor a label; pass an integer index or a label")
    try:
        k = operator.index(c)  # ints, numpy and torch integers
    except TypeError:
        raise ConfigError(f"class {c!r} ({type(c).__name__}) is not a class index (an integer) nor a label") from None
    return _index(k, num_classes, where)


def _index(k: int, num_classes: int, where: str) -> int:
    if not 0 <= k < num_classes:
        raise ConfigError(f"class {k} does not exist ({where} has classes 0..{num_classes - 1})")
    return k
