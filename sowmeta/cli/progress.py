"""The one progress display of the CLI, on stderr: rich bars on a terminal, plain lines in a log, nothing when quiet."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

__all__ = ["LiveProgress", "PLAIN_EVERY_S"]

PLAIN_EVERY_S = 10.0  # a log gets a line per task at most this often (and at the end of each task)


class LiveProgress:
    """Progress of named tasks (description, done/total, elapsed, ETA, an ``info`` text), shown from the first update.

    On a terminal, rich bars; otherwise (a log, a pipe) one plain line per task every
    ``PLAIN_EVERY_S`` seconds and when it completes, so a log never holds bar glyphs.
    Starting late keeps input errors to one line; ``quiet`` shows nothing. Use as a context
    manager so the display stops on every exit.

    Example:
        >>> with LiveProgress(err_console, ["collect"], quiet=False) as bar:
        ...     bar.update("collect", completed=10, total=100, info="512 img/s")
    """

    def __init__(self, console: Any, tasks: list[str], *, quiet: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.quiet = quiet
        self.console = console
        self.plain = not console.is_terminal
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=self.plain,
        )
        self.tasks = {name: self.bar.add_task(name, total=None, info="") for name in tasks}
        self.last_line: dict[str, float] = {}
        self.finished: set[str] = set()

    def update(self, task: str, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, info: str | None = None) -> None:
        """Move ``task``; the display starts with the first call."""
        if self.quiet:
            return
        if not self.plain and not self.bar.live.is_started:
            self.bar.start()
        if task not in self.tasks:  # stages may appear as the work goes
            self.tasks[task] = self.bar.add_task(task, total=None, info="")
        fields: dict[str, Any] = {k: v for k, v in (("completed", completed), ("total", total), ("description", description), ("info", info)) if v is not None}
        self.bar.update(self.tasks[task], **fields)
        if self.plain:
            self._plain_line(task)

    def _plain_line(self, task: str) -> None:
        """One line for a log: ``collect 5000/50000 12 s elapsed, ETA 108 s 415 img/s``, throttled."""
        t = self.bar.tasks[self.tasks[task]]
        now = time.monotonic()
        done = t.total is not None and t.completed >= t.total
        finished_now = done and task not in self.finished
        if done:
            self.finished.add(task)
        else:
            self.finished.discard(task)  # a task that starts over (the next batch's iterations) may finish again
        if not finished_now and now - self.last_line.get(task, -PLAIN_EVERY_S) < PLAIN_EVERY_S:
            return
        self.last_line[task] = now
        count = f"{t.completed:g}/{t.total:g}" if t.total is not None else f"{t.completed:g}"
        eta = f", ETA {t.time_remaining:.0f} s" if t.time_remaining is not None and not done else ""
        info = f" {t.fields.get('info', '')}" if t.fields.get("info") else ""
        self.console.print(f"{t.description} {count} {t.elapsed or 0:.0f} s elapsed{eta}{info}", markup=False, highlight=False, soft_wrap=True)

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
