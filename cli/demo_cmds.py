"""``sowmeta demo``: the whole idea on a laptop CPU, offline, in a few minutes."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["register"]


def register(group: click.Group) -> None:
    """Add ``demo`` to ``group``."""
    from sowmeta.cli.main import console, handle_errors

    @group.command()
    @click.option("--out", default="sowmeta-demo", show_default=True, type=click.Path(path_type=Path), help="Folder for the demo's files.")
    @click.option("--quick", is_flag=True, help="A smaller run (seconds), as in the tests.")
    @click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ... (the demo is sized for a CPU).")
    @handle_errors
    def demo(out: Path, quick: bool, device: str) -> None:
        """Train a small CNN with statistics recording, publish, pull, and synthesize in cc and di modes."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Table

        from sowmeta.demo import DemoConfig, run_demo

        bar = Progress(TextColumn("[bold]{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        tasks: dict[str, int] = {}

        def stage(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        with bar:
            report = run_demo(out, config=DemoConfig.quick() if quick else DemoConfig(), device=device, stage=stage)
        table = Table(title="sowmeta demo: class-conditional (cc) vs DeepInversion (di)")
        table.add_column("mode")
        table.add_column("teacher top-1 on synthesized", justify="right")
        table.add_column("background distance to real (lower is better)", justify="right")
        for mode in ("cc", "di"):
            table.add_row(mode, f"{report.accuracy[mode]:.1%}", f"{report.background_distance[mode]:.3f}")
        console.print(table)
        console.print(f"teacher accuracy on real test images: {report.teacher_test_accuracy:.1%}")
        console.print(f"grid: [bold]{report.grid}[/]  report: [bold]{out / 'report.json'}[/]  bundle: {report.registry_name} (local registry in {out / 'registry'})")
