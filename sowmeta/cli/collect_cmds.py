"""``sowmeta collect``, ``inspect``, ``validate``, ``models``, ``taps``: make and check bundles.

Every field of ``CollectOptions`` is an option of ``collect`` (``record_options``); the command adds
the model, the data or seeds, the preprocessing and the base model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sowmeta.cli.options import device_option, emit_json, model_options, record_options, record_values, registry_option, report_options
from sowmeta.cli.progress import LiveProgress
from sowmeta.cli.safe_text import shown
from sowmeta.cli.terminal import console, err_console, handle_errors, note_printer
from sowmeta.collectors.options import CollectOptions

__all__ = ["COMMANDS", "collect", "inspect_cmd", "validate", "models_cmd", "taps_cmd"]

UNLISTED = ("timm names are listed for a pattern such as 'timm:resnet*' (pip install timm); "
            "hf-hub:ORG/NAME and package.module:factory are accepted but not listed")
_LISTED = 5  # misclassified seeds named one by one; the manifest keeps them all


def _preprocessing_options(fn: Any) -> Any:
    for option in reversed([
        click.option("--crop", type=click.IntRange(1), help="Input resolution (overrides the weights' preprocessing; keeps their resize ratio). [the weights']"),
        click.option("--resize", type=click.IntRange(1), help="Resize the short side to this first. [the weights']"),
        click.option("--mean", help="Normalization mean, three numbers: 0.485,0.456,0.406. [the weights']"),
        click.option("--std", help="Normalization std, three positive numbers: 0.229,0.224,0.225. [the weights']"),
    ]):
        fn = option(fn)
    return fn


def _collect_report(bundle: Any, report: Any, out: Path, keep_rejected: bool, as_json: bool, quiet: bool, notes: list[str]) -> None:
    source = bundle.manifest.source
    if as_json:
        emit_json({"out": out, "images": report.images, "taps": len(bundle.manifest.taps), "scenario": source.scenario,
                   "empty_classes": source.empty_classes, "skipped": report.skipped, "rejected": report.rejected, "seconds": report.seconds,
                   "notes": notes})
        return
    if not quiet:
        what = "misclassified seed (kept)" if keep_rejected else "rejected seed"
        for r in report.rejected[:_LISTED]:
            err_console.print(f"[yellow]{what}[/] {shown(r['path'])}: class {r['class']}, predicted {r['predicted']}", soft_wrap=True)
        if len(report.rejected) > _LISTED:
            err_console.print(f"[yellow]... and {len(report.rejected) - _LISTED} more[/] (all in `sowmeta inspect {out} --json`)", soft_wrap=True)
        if report.skipped:
            err_console.print(f"[yellow]skipped {len(report.skipped)} undecodable images[/] (first: {shown(report.skipped[0])})", soft_wrap=True)
        if source.empty_classes:
            err_console.print(f"[yellow]{len(source.empty_classes)} classes have no images[/] (first: {source.empty_classes[0]}); their rows are zeros")
    console.print(f"wrote [bold]{shown(out)}[/]: {report.images} images, {len(bundle.manifest.taps)} taps, scenario {source.scenario}")


def _run_collect(loaded: Any, o: dict[str, Any], opts: CollectOptions) -> tuple[Any, Any] | None:
    """The pass over the seeds (rank 0 alone) or the data (every rank); None on a rank that does not report."""
    from sowmeta.collectors import collect as collect_data
    from sowmeta.collectors import collect_seeds
    from sowmeta.distributed import process_group

    notice = note_printer(o["quiet"] or o["as_json"], keep=o["notes"])
    with process_group(opts.device) as (rank, _):
        if o["seeds"] is not None:
            if rank != 0:  # a few seeds need no sharding: rank 0 alone checks them and writes the bundle
                return None
            with LiveProgress(err_console, ["seeds"], quiet=o["quiet"] or o["as_json"]) as bar:
                return collect_seeds(loaded, o["seeds"], opts, notice=notice,
                                     progress=lambda done, total: bar.update("seeds", completed=done, total=total))
        with LiveProgress(err_console, ["collect"], quiet=o["quiet"] or o["as_json"] or rank != 0) as bar:

            def progress(done: int, total: int) -> None:
                bar.update("collect", completed=done, total=total, info=f"{done / bar.elapsed('collect'):,.0f} img/s")

            result = collect_data(loaded, o["data"], opts, progress=progress, notice=notice)
        return result if rank == 0 else None


@click.command("collect")
@model_options(required=True, what="the classifier whose statistics are recorded")
@click.option("--data", type=click.Path(path_type=Path), help="Class-per-folder image directory, folders named by class (Scenario A). [one of --data, --seeds]")
@click.option("--seeds", type=click.Path(path_type=Path), help="Seed images SEEDS/<label or index>/<image> (Scenario B, or C with one per class). [one of --data, --seeds]")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@record_options(CollectOptions)
@device_option
@_preprocessing_options
@click.option("--base-model", help="Hub id ORG/NAME of the model's weights; the bundle's model card links to it. [unset]")
@report_options
@handle_errors
def collect(**options: Any) -> None:
    """Record per-class feature statistics of a model into a bundle."""
    from sowmeta.errors import ConfigError
    from sowmeta.models import load_model, parse_model_args
    from sowmeta.outputs import check_output

    opts = CollectOptions(device=options["device"], out=options["out"], **record_values(CollectOptions, options))
    o = options
    if (o["data"] is None) == (o["seeds"] is None):
        raise ConfigError("pass exactly one of --data (a labelled dataset) or --seeds (seed images)")
    check_output(opts.out, "bundle", overwrite=opts.overwrite, inputs=[("--data", o["data"]), ("--seeds", o["seeds"])])
    loaded = load_model(o["model"], weights="DEFAULT" if o["weights"] is None else o["weights"], args=parse_model_args(o["model_args"]),
                        preprocessing={"crop": o["crop"], "resize": o["resize"], "mean": o["mean"], "std": o["std"]})
    loaded.base_model = o["base_model"]
    o["notes"] = []
    result = _run_collect(loaded, o, opts)
    if result is not None:
        _collect_report(*result, opts.out, opts.keep_rejected, o["as_json"], o["quiet"], o["notes"])


@click.command("inspect")
@click.argument("bundle")
@click.option("--all-taps", is_flag=True, help="List every tap, not the first 12.")
@registry_option
@report_options
@handle_errors
def inspect_cmd(bundle: str, all_taps: bool, registry: str | None, as_json: bool, quiet: bool) -> None:
    """Show a bundle's model, classes, taps, channels, counts and size (its files verified first)."""
    from sowmeta.registry import resolve_bundle
    from sowmeta.bundle.summary import summarize

    s = summarize(resolve_bundle(bundle, registry=registry))
    if as_json:
        emit_json(s)
        return
    _render_summary(s, all_taps, quiet)

def _render_summary(s: dict[str, Any], all_taps: bool, quiet: bool) -> None:
    from rich.table import Table

    from sowmeta.data.jpeg_quality import describe_compression

    m = s["model"]  # every string below comes from a file and is shown escaped
    console.print(f"[bold]{shown(s['path'])}[/]  format {shown(s['format_version'])}  scenario {shown(s['source']['scenario'])} "
                  f"({shown(s['source']['collector'])})  [green]verified[/]")
    name = m["architecture"] if m["architecture"] != "custom" else f"custom ({m.get('factory')})"
    weights = "none recorded" if m["weights"] is None else shown(m["weights"])
    fused = "BatchNorm fused" if m["fused"] else "BatchNorm not fused"
    console.print(f"model {shown(name)}  weights {weights}  {fused}  fingerprint {shown(m['fingerprint'])}")
    files = f"{len(s['files'])} file{'' if len(s['files']) == 1 else 's'}"
    console.print(f"{m['num_classes']} classes, {s['images']} images, {len(s['taps'])} taps, {s['size_bytes']:,} bytes in {files}, {s['dtype']}")
    console.print(f"source images: {shown(describe_compression(s['source'].get('compression')))}")
    console.print("image spread (image_var): " + ("recorded" if s["image_var"] else "not recorded, so synthesis runs without the spread term"))
    if s["source"]["empty_classes"]:
        console.print(f"[yellow]classes without statistics[/]: {s['source']['empty_classes'][:20]}{' ...' if len(s['source']['empty_classes']) > 20 else ''}")
    if quiet:
        return
    classes = Table(title="classes")
    for col in ("index", "label", "images"):
        classes.add_column(col)
    for row in s["classes"][:20]:
        classes.add_row(str(row["index"]), shown(row["label"]), str(row["images"]))
    if len(s["classes"]) > 20:
        classes.add_row("...", f"{len(s['classes']) - 20} more", "")
    console.print(classes)
    taps_t = Table(title="taps")
    for col in ("name", "kind", "axis", "channels"):
        taps_t.add_column(col)
    shown_taps = s["taps"] if all_taps else s["taps"][:12]
    for t in shown_taps:
        taps_t.add_row(shown(t["name"]), shown(t["kind"]), str(t["axis"]), str(t["channels"]))
    if len(shown_taps) < len(s["taps"]):
        taps_t.add_row("...", f"{len(s['taps']) - len(shown_taps)} more (--all-taps)", "", "")
    console.print(taps_t)

@click.command("validate")
@click.argument("bundle")
@model_options(what="the bundle, to check it against", model_default="unset: no model check", weights_default="the manifest's")
@registry_option
@report_options
@handle_errors
def validate(bundle: str, model: str | None, weights: str | None, model_args: tuple[str, ...], registry: str | None, as_json: bool, quiet: bool) -> None:
    """Check a bundle against every rule of its format (docs/format.md), and optionally that it matches a model.

    Every file is read in full (no remembered check is trusted). A refusal names the rule
    broken; with --json it is {"ok": false, "rule": ..., "error": ...} and exit code 1.
    """
    from sowmeta.bundle import Bundle
    from sowmeta.bundle.files import verify_files
    from sowmeta.errors import BundleError
    from sowmeta.bundle import load_model_for
    from sowmeta.models import parse_model_args
    from sowmeta.registry import resolve_bundle

    path = resolve_bundle(bundle, registry=registry)
    try:
        manifest = Bundle.read_manifest(path)
        verify_files(path, manifest)
        b = Bundle.load(path, verify=False)
    except BundleError as exc:
        if not as_json:
            raise
        emit_json({"path": path, "ok": False, "rule": exc.rule, "error": str(exc)})
        raise SystemExit(1) from None
    checked = ["rules"]
    if model is not None or weights is not None:
        b.check(load_model_for(b.manifest, model=model, weights=weights, args=parse_model_args(model_args) if model_args else None,
                               notice=note_printer(quiet or as_json)).module)
        checked += ["taps", "channels", "classes", "structure", "fingerprint"]
    if as_json:
        emit_json({"path": path, "ok": True, "format_version": b.manifest.format_version, "checked": checked})
        return
    m = b.manifest
    files = f"{len(m.files)} file{'s' if len(m.files) != 1 else ''}"
    console.print(f"[green]ok[/] {path}: format {m.format_version}, every rule of docs/format.md, {files} read in full, {len(m.taps)} taps")
    if len(checked) > 1:
        console.print(f"[green]ok[/] matches {model or m.model.architecture}: taps, channels, classes, structure and fingerprint")

@click.command("models")
@click.argument("pattern", default="*")
@report_options
@handle_errors
def models_cmd(pattern: str, as_json: bool, quiet: bool) -> None:
    """List the model names --model accepts (glob PATTERN): built-in, torchvision, and timm's for 'timm:PATTERN'.

    Also accepted, not listed: hf-hub:ORG/NAME (a timm or transformers classifier on the Hub) and
    package.module:factory (your own code).
    """
    from sowmeta.models import list_models

    names = list_models(pattern)
    if as_json:
        emit_json({"models": names})
        return
    for name in names:
        click.echo(name)
    if not names and not quiet:
        err_console.print(f"no model name matches {shown(pattern)!r}; {UNLISTED}", soft_wrap=True, highlight=False)

@click.command("taps")
@click.argument("model_name", required=False, metavar="MODEL")
@model_options(what="the classifier to list taps of (or give it as MODEL)", model_default="MODEL", weights_default="none")
@click.option("--taps", "spec", default="auto", show_default=True, help="A tap preset or module names/globs to resolve.")
@_preprocessing_options
@report_options
@handle_errors
def taps_cmd(model_name: str | None, model: str | None, weights: str | None, model_args: tuple[str, ...], spec: str, crop, resize, mean, std,
             as_json: bool, quiet: bool) -> None:  # noqa: ANN001
    """List the taps a specification resolves to on MODEL, with their shapes, channel axes and channels."""
    from sowmeta.errors import ConfigError
    from sowmeta.models import load_model, parse_model_args
    from sowmeta.models.taps import describe_taps

    if (model_name is None) == (model is None):
        raise ConfigError("name the model once: `sowmeta taps MODEL` or `sowmeta taps --model MODEL`")
    loaded = load_model(model_name or model, weights="none" if weights is None else weights, args=parse_model_args(model_args),
                        preprocessing={"crop": crop, "resize": resize, "mean": mean, "std": std})
    rows = describe_taps(loaded.module, spec, loaded.preprocessing.crop)
    if as_json:
        emit_json({"model": model_name or model, "spec": spec, "taps": rows})
        return
    from rich.table import Table

    table = Table(title=f"{model_name or model}: taps {spec}")
    for col in ("name", "kind", "shape", "axis", "channels"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["kind"], "x".join(str(v) for v in r["shape"]), str(r["axis"]), str(r["channels"]))
    console.print(table)


COMMANDS = [collect, inspect_cmd, validate, models_cmd, taps_cmd]
