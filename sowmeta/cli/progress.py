"""The one progress display of the CLI: bars that appear with the first update, never when quiet."""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["LiveProgress"]


class LiveProgress:
    """Rich bars (description, bar, done/total, elapsed, ETA, an ``info`` text) shown from the first update.

    Starting late keeps input errors to one line; ``quiet`` shows nothing. Use as a context
    manager so the display stops on every exit.

    Example:
        >>> with LiveProgress(console, ["collect"], quiet=False) as bar:
        ...     bar.update("collect", completed=10, total=100, info="512 img/s")
    """

    def __init__(self, console: Any, tasks: list[str], *, quiet: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.quiet = quiet
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        self.tasks = {name: self.bar.add_task(name, total=None, info="") for name in tasks}

    def update(self, task: str, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, info: str | None = None) -> None:
        """Move ``task``; the display starts with the first call."""
        if self.quiet:
            return
        if not self.bar.live.is_started:
            self.bar.start()
        if task not in self.tasks:  # stages may appear as the work goes
            self.tasks[task] = self.bar.add_task(task, total=None, info="")
        fields: dict[str, Any] = {k: v for k, v in (("completed", completed), ("total", total), ("description", description), ("info", info)) if v is not None}
        self.bar.update(self.tasks[task], **fields)

    def elapsed(self, task: str) -> float:
        """Seconds since ``task`` started (tiny but positive before)."""
        return self.bar.tasks[self.tasks[task]].elapsed or 1e-9

    def stop(self) -> None:
        if self.bar.live.is_started:  # a display never shown leaves no blank line behind
            self.bar.stop()

    def __enter__(self) -> LiveProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
