"""``sowmeta audit``: what a bundle reveals about the images it was collected from (``sowmeta.privacy.audit``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sowmeta.cli.options import device_option, emit_json, model_options, registry_option, report_options
from sowmeta.cli.safe_text import shown
from sowmeta.cli.terminal import console, handle_errors

__all__ = ["COMMANDS", "audit_cmd"]


@click.command("audit")
@click.argument("bundle")
@click.option("--members", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Class folders of images the bundle was collected from.")
@click.option("--non-members", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Class folders of images of the same classes that were not collected.")
@model_options(what="the bundle (default: the one its manifest names)", model_default="the bundle's")
@click.option("--limit-per-class", default=100, show_default=True, type=click.IntRange(1), help="Images of each class read from each folder.")
@click.option("--synthesis", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="An HDF5 file synthesized from the bundle: distances to the nearest member and non-member. [none]")
@click.option("--judge", help="Model whose penultimate features measure those distances (e.g. cifar-resnet20). [the bundle's model]")
@click.option("--judge-weights", help="Weights for --judge. [DEFAULT]")
@click.option("--pairs", type=click.Path(path_type=Path), help="Write a PNG of the synthesized images closest to a member, with both neighbours. [none]")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1), help="Images per forward pass.")
@device_option
@registry_option
@report_options
@handle_errors
def audit_cmd(bundle: str, members: Path, non_members: Path, model: str | None, weights: str | None, model_args: tuple[str, ...],
              limit_per_class: int, synthesis: Path | None, judge: str | None, judge_weights: str | None, pairs: Path | None,
              batch_size: int, device: str, registry: str | None, as_json: bool, quiet: bool) -> None:
    """Measure what BUNDLE reveals about its images: a membership test on the statistics, and reconstruction by synthesis."""
    from sowmeta.errors import ConfigError
    from sowmeta.privacy import audit
    from sowmeta.registry import resolve_bundle

    if pairs is not None and synthesis is None:
        raise ConfigError("--pairs shows synthesized images beside their nearest members; pass --synthesis too")
    if model_args:
        raise ConfigError("audit rebuilds the bundle's model from its manifest; --model-arg is not used here")
    report = audit(resolve_bundle(bundle, registry=registry), members=members, non_members=non_members, model=model, weights=weights,
                   synthesis=synthesis, judge=judge, judge_weights=judge_weights, limit_per_class=limit_per_class, pairs=pairs,
                   batch_size=batch_size, device=device)
    if as_json:
        emit_json(_as_dict(report))
        return
    _render(report, quiet)


def _as_dict(report: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(report)


def _render(r: Any, quiet: bool) -> None:
    from rich.table import Table

    m = r.membership
    p = r.privacy
    guarantee = f"epsilon {p['epsilon']:g}, delta {p['delta']:g} ({p['mechanism']}, clip {p['clip']:g})" if p else "none"
    console.print(f"[bold]{shown(r.bundle)}[/]  scenario {shown(r.scenario)}, {r.classes} classes, {r.images_per_class:,.1f} images per class, "
                  f"differential privacy: {shown(guarantee)}")
    table = Table(title="membership inference on the statistics (likelihood ratio of per-image feature means)")
    for col in ("members", "non-members", "advantage (TPR-FPR)", "TPR", "FPR", "AUC", "chance (95 %)", "DP bound"):
        table.add_column(col)
    table.add_row(str(m.members), str(m.non_members), f"{m.advantage:.3f}", f"{m.tpr:.3f}", f"{m.fpr:.3f}", f"{m.auc:.3f}", f"{m.chance:.3f}",
                  "-" if m.bound is None else f"{m.bound:.3f}")
    console.print(table)
    rec = r.reconstruction
    if rec is not None:
        t = Table(title=f"reconstruction: {rec.images} synthesized images, median distance to the nearest image of their class")
        for col in ("", "nearest member", "nearest non-member"):
            t.add_column(col)
        t.add_row("judge features", f"{rec.feature_member:.3f}", f"{rec.feature_non_member:.3f}")
        t.add_row("pixels (RMS, 0-1)", f"{rec.pixel_member:.4f}", f"{rec.pixel_non_member:.4f}")
        console.print(t)
        console.print(f"nearest image is a member for {rec.closer_to_member:.1%} of the synthesized images"
                      + (f"; closest pairs: {shown(rec.pairs)}" if rec.pairs else ""))
    if not quiet:
        for note in r.notes:
            console.print(f"[yellow]note[/]: {shown(note)}")


COMMANDS = [audit_cmd]
