"""``sowmeta demo``: the whole idea on a laptop CPU, offline, in a few minutes."""

from __future__ import annotations

from pathlib import Path

import click

from sowmeta.cli.options import device_option, emit_json, report_options
from sowmeta.cli.progress import LiveProgress
from sowmeta.cli.terminal import console, err_console, handle_errors

__all__ = ["COMMANDS", "demo"]


@click.command("demo")
@click.option("--out", default="sowmeta-demo", show_default=True, type=click.Path(path_type=Path), help="Folder for the demo's files (new, empty, or an earlier demo's).")
@click.option("--quick", is_flag=True, help="A smaller run (seconds), as in the tests.")
@device_option
@report_options
@handle_errors
def demo(out: Path, quick: bool, device: str, as_json: bool, quiet: bool) -> None:
    """Train a small CNN with statistics recording, publish, pull, and synthesize in cc and di modes and from sketches."""
    from rich.table import Table

    from sowmeta.demo import DemoConfig, run_demo

    with LiveProgress(err_console, [], quiet=quiet or as_json) as bar:
        report = run_demo(out, config=DemoConfig.quick() if quick else DemoConfig(), device=device,
                          stage=lambda name, done, total: bar.update(name, completed=done, total=total))
    if as_json:
        emit_json(report)
        return
    table = Table(title="sowmeta demo: class-conditional (cc) vs DeepInversion (di)")
    table.add_column("mode")
    table.add_column("teacher top-1 on synthesized", justify="right")
    table.add_column("background distance to real (lower is better)", justify="right")
    for mode, name in (("cc", "cc"), ("di", "di"), ("sketch", "cc from outlines")):
        table.add_row(name, f"{report.accuracy[mode]:.1%}", f"{report.background_distance[mode]:.3f}")
    if not quiet:
        console.print(table)
        console.print(f"teacher accuracy on real test images: {report.teacher_test_accuracy:.1%}")
        console.print(f"sketch edges kept (within 1 px): {report.sketch_edge_overlap:.1%} started from the outlines, "
                      f"{report.sketch_edge_overlap_noise:.1%} for cc images started from noise")
        console.print(f"object inside the sketched shape (brightness inside - outside): {report.sketch_inside_contrast:+.3f} "
                      f"from the sketches, {report.sketch_inside_contrast_noise:+.3f} from noise, "
                      f"{report.sketch_inside_contrast_real:+.3f} for real images")
    console.print(f"grid: [bold]{report.grid}[/]  sketches: [bold]{report.sketch_grid}[/]  report: [bold]{out / 'report.json'}[/]  bundle: {report.registry_name} (local registry in {out / 'registry'})")


COMMANDS = [demo]
