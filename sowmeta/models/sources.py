"""Model sources: where a model name is resolved, and the rule that a manifest never names code.

A source claims the names it builds (``claims``), builds them (``build``), lists what it can
(``names``) and says whether building means running the caller's Python code (``runs_code``):
such sources serve only names the user typed, never a manifest, and are asked last. Adding a
source is a ``MODEL_SOURCES.register`` (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..errors import ModelError
from ..named import Registry
from .loaded import LoadedModel

__all__ = ["ModelSource", "MODEL_SOURCES", "source_for", "refuse_args"]


@runtime_checkable
class ModelSource(Protocol):
    """Builds the models whose names it claims."""

    runs_code: bool

    def claims(self, name: str) -> bool:
        """True when ``name`` is one of this source's models (cheap: no download, no import of user code)."""

    def build(self, name: str, weights: str | None, num_classes: int | None, args: dict[str, Any]) -> LoadedModel:
        """The model ``name`` with ``weights`` (None: random init); ``args`` are the user's ``--model-arg`` values."""

    def names(self) -> list[str]:
        """Names to list in ``sowmeta models`` (may be empty for open-ended sources)."""


MODEL_SOURCES: Registry[ModelSource] = Registry("model source", error=ModelError)


def source_for(name: str, *, trusted: bool = True) -> ModelSource:
    """The first source that claims ``name``: sources that run no code first, each group in registration order.

    With ``trusted=False`` (a name read from a manifest) a source that runs code is refused.
    """
    ordered = sorted(MODEL_SOURCES.items(), key=lambda item: item[1].runs_code)
    for _, source in ordered:
        if source.claims(name):
            if source.runs_code and not trusted:
                raise ModelError(
                    f"the bundle's model {name!r} is custom Python code, which sowmeta never runs from a manifest; "
                    f"pass model={name!r} with weights=FILE yourself"
                )
            return source
    import difflib

    known = [n for _, s in MODEL_SOURCES.items() for n in s.names()]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ModelError(f"unknown model {name!r}{hint} (see `sowmeta models`, or use package.module:factory)")


def refuse_args(name: str, args: dict[str, Any]) -> None:
    """For sources whose models take no construction arguments."""
    if args:
        raise ModelError(f"--model-arg {next(iter(args))!r} does not apply to {name}; model arguments go to package.module:factory and timm models")
