"""``sowmeta synthesize``: images of chosen classes from a model and its bundle.

Every field of ``SynthConfig`` is an option (``record_options``), its help showing each preset's
value; the command adds what is not the objective's: the bundle, the model, classes, outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sowmeta.cli.options import (
    ListingOption,
    device_option,
    emit_json,
    model_options,
    record_options,
    record_values,
    registry_option,
    report_options,
)
from sowmeta.cli.terminal import console, err_console, handle_errors, note_printer
from sowmeta.synth.config import PRESETS, SynthConfig

__all__ = ["COMMANDS", "synthesize"]

GRID_COLUMNS = 8


def _classes(text: str | None) -> list[str] | None:
    from sowmeta.errors import ConfigError

    if text is None or text.strip() == "all":
        return None
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    if not chosen:
        raise ConfigError(f"--classes {text!r} names no class; pass indices or labels (3,5 or cat,dog), or 'all'")
    return chosen


def _held_classes(chosen: list[str] | None, located: Any, mode: str, notice: Any) -> list[str] | None:
    """``--classes all`` in cc mode means the classes the bundle has statistics for (a seed or sketch bundle holds a few)."""
    from sowmeta.bundle import Bundle

    if chosen is not None or located is None or mode != "cc":
        return chosen
    manifest = Bundle.read_manifest(located.path)
    empty = set(manifest.source.empty_classes)
    if not empty:
        return None
    held = [str(k) for k in range(manifest.model.num_classes) if k not in empty]
    notice(f"the bundle has statistics for {len(held)} of {manifest.model.num_classes} classes; synthesizing those ({', '.join(held[:8])}"
           f"{', ...' if len(held) > 8 else ''})")
    return held


def _presets() -> dict[str, SynthConfig]:
    return {name: SynthConfig.preset(name) for name in PRESETS.names()}


def _live_display(console: Any, quiet: bool) -> tuple[Any, Any]:
    """A progress display with a batch bar, an iteration bar and the loss terms; and its update callback."""
    from sowmeta.cli.progress import LiveProgress

    bar = LiveProgress(console, ["images", "iteration"], quiet=quiet)

    def update(p: Any) -> None:
        bar.update("images", completed=p.images_done, total=p.images_total, description=f"batch {p.batch}/{p.batches}")
        if p.iteration is not None:
            terms = "  ".join(f"{k} {v:.3g}" for k, v in p.iteration.terms.items())
            bar.update("iteration", completed=p.iteration.iteration, total=p.iteration.iterations, info=terms)

    return bar, update


def _check_outputs(o: dict[str, Any]) -> Path | None:
    """Refuse what cannot work before anything is loaded; the folder of initial images, if any."""
    from sowmeta.errors import ConfigError
    from sowmeta.outputs import check_distinct, check_output

    if o["bundle"] is None and o.get("mode", "cc") != "di":
        raise ConfigError(f"mode {o.get('mode', 'cc')} needs --bundle (a directory or org/name); only --mode di works from the model alone")
    if o.get("jpeg_subsampling") is not None and not o.get("jpeg_quality"):
        raise ConfigError("--jpeg-subsampling describes the encoding of --jpeg-quality; pass that too (the data's JPEG quality)")
    check_distinct([("--out", o["out"]), ("--png", o["png"]), ("--grid", o["grid"])])
    for what, path, kind in (("--png", o["png"], "png-tree"), ("--grid", o["grid"], "png")):
        if path is not None:
            check_output(path, kind, overwrite=o["overwrite"], what=what)
    init_dir = None if o["init"] == "noise" else Path(o["init"])
    if init_dir is not None and not init_dir.is_dir():
        raise ConfigError(f"--init must be 'noise' or a folder of initial images; {init_dir} is not a directory")
    return init_dir


def _export(result: Any, o: dict[str, Any]) -> None:
    """The PNG folder and the contact sheet, when asked for."""
    from sowmeta.data.export import contact_sheet, readable_scale, save_contact_sheet, write_pngs

    if o["png"] is not None:
        write_pngs(o["out"], o["png"], overwrite=o["overwrite"])
    if o["grid"] is not None:
        images = result.images()
        columns = min(GRID_COLUMNS, o["per_class"])  # one image per class makes a one-column sheet, not eight
        sheet = contact_sheet(images, result.labels, per_class=columns, names=result.class_labels, scale=readable_scale(images.shape[-1]))
        save_contact_sheet(sheet, o["grid"], overwrite=o["overwrite"])


def _report(result: Any, preset: str, o: dict[str, Any]) -> None:
    from sowmeta.errors import SynthesisError

    out, mode = o["out"], result.config.mode
    if o["as_json"]:
        emit_json({"out": out, "images": len(result.labels), "mode": mode, "preset": preset, "teacher_top1": result.teacher_accuracy,
                   "chance": result.chance, "failed": result.failed, "seconds": result.seconds,
                   "resumed_batches": result.resumed_batches, "png": o["png"], "grid": o["grid"]})
    else:
        resumed = f" ({result.resumed_batches} batches resumed)" if result.resumed_batches else ""
        console.print(
            f"wrote [bold]{out}[/]: {len(result.labels)} images, mode {mode}, preset {preset}, "
            f"teacher top-1 {result.teacher_accuracy:.1%}, {result.seconds:.0f} s{resumed}"
        )
    if result.failed and not o["allow_low_confidence"]:
        raise SynthesisError(
            f"the teacher recognises only {result.teacher_accuracy:.1%} of the images (chance is {result.chance:.1%}): the run failed; "
            f"{out} is kept for inspection. Try a lower --lr or more --iterations, or pass --allow-low-confidence"
        )
    if not (o["quiet"] or o["as_json"]) and result.teacher_accuracy < 0.5:
        err_console.print("[yellow]the teacher recognises fewer than half of the images[/]; try more --iterations or a lower --alpha-cc")


@click.command("synthesize")
@click.option("--bundle", help="Bundle directory or registry name ORG/NAME[/SUBFOLDER][@REVISION] (pulled on demand). [required, except --mode di]")
@registry_option
@model_options(what="the bundle (--weights alone keeps the manifest's model)", model_default="the manifest's", weights_default="the manifest's")
@click.option("--classes", default="all", show_default=True, help="Comma-separated class indices or labels, or 'all'.")
@click.option("--per-class", default=50, show_default=True, type=click.IntRange(1), help="Images per class.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="HDF5 file to write (resumed if unfinished).")
@click.option("--preset", default="auto", show_default=True, cls=ListingOption, names=lambda: ["auto", *PRESETS.names()],
              help="The defaults of every option below; auto picks cifar for inputs of 64 px or less.")
@record_options(SynthConfig, presets=_presets)
@click.option("--init", "init", default="noise", show_default=True, help="noise, or a folder <label>/<image> of seed images or sketches.")
@click.option("--png", type=click.Path(path_type=Path), help="Also write PNGs to DIR/<index>_<label>/, one folder per synthesized class. [unset]")
@click.option("--grid", type=click.Path(path_type=Path), help="Also write a contact sheet PNG: a row per class, its first images (up to 8, as many as --per-class). [unset]")
@device_option
@click.option("--allow-low-confidence", is_flag=True, help="Exit 0 even when the teacher recognises the images no better than chance.")
@click.option("--overwrite", is_flag=True, help="Replace --out, --png and --grid (only sowmeta's own) and discard an unfinished run.")
@report_options
@handle_errors
def synthesize(**options: Any) -> None:
    """Synthesize images of chosen classes from a model and its class-conditional statistics."""
    from sowmeta.distributed import is_main_process
    from sowmeta.models import parse_model_args
    from sowmeta.registry import locate_bundle
    from sowmeta.synth import synthesize as run
    from sowmeta.synth.job import open_model

    overrides = record_values(SynthConfig, options)
    o = {**options, **overrides}
    init_dir = _check_outputs(o)
    located = locate_bundle(o["bundle"], registry=o["registry"]) if o["bundle"] is not None else None
    opened = open_model(located, model=o["model"], weights=o["weights"], args=parse_model_args(o["model_args"]) if o["model_args"] else None)
    config = SynthConfig.preset(o["preset"], crop=opened.crop, **overrides, init="noise" if init_dir is None else "images")
    bar, update = _live_display(err_console, o["quiet"] or o["as_json"])
    notice = note_printer(o["quiet"] or o["as_json"])  # the note comes before the first progress update, so before the bars
    classes = _held_classes(_classes(o["classes"]), opened.located, config.mode, notice)
    with bar:
        result = run(opened.located, opened.model, classes=classes, per_class=o["per_class"], config=config, out=o["out"],
                     device=o["device"], overwrite=o["overwrite"], init_images=init_dir, progress=update, notice=notice)
    if not is_main_process():  # under torchrun, rank 0 reports and exports
        return
    _export(result, o)
    _report(result, SynthConfig.preset_name(o["preset"], opened.crop), o)


COMMANDS = [synthesize]
