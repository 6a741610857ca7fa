"""The one progress-bar layout of the CLI: description, bar, done/total, elapsed, ETA, and a free-text field."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(console: Any) -> Any:
    """A rich ``Progress`` whose tasks carry an ``info`` field (rate, loss terms, accuracy) shown last."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    )
