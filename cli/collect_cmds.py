"""``sowmeta collect``, ``inspect``, ``validate``, ``models``, ``taps``: make and check bundles."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["register"]


def _parse_taps(value: str) -> str | list[str]:
    return value if value in ("auto", "bn-inputs", "conv-outputs") else [v for v in value.split(",") if v]


def _load(model: str, weights: str | None, crop: int | None, resize: int | None, mean: str | None, std: str | None):  # noqa: ANN202
    from sowmeta.errors import ConfigError
    from sowmeta.models import load_model
    from sowmeta.preprocess import Preprocessing

    loaded = load_model(model, weights=weights)
    if any(v is not None for v in (crop, resize, mean, std)):
        base = loaded.preprocessing

        def triple(text: str | None, default: tuple[float, float, float]) -> tuple[float, float, float]:
            if text is None:
                return default
            try:
                vals = tuple(float(v) for v in text.split(","))
            except ValueError:
                vals = ()
            if len(vals) != 3:
                raise ConfigError(f"--mean/--std take three comma-separated numbers (e.g. 0.485,0.456,0.406), got {text!r}")
            return vals  # type: ignore[return-value]

        new_std = triple(std, base.std)
        if min(new_std) <= 0:
            raise ConfigError(f"--std values must be positive, got {std!r}")
        if resize is None and crop is not None and base.resize is not None:
            # A new crop keeps the weights' resize/crop ratio (256/224): never a small centre of a large resize.
            resize = max(crop, round(crop * base.resize / base.crop))
        loaded.preprocessing = Preprocessing(
            crop=crop or base.crop,
            resize=resize if resize is not None else base.resize,
            mean=triple(mean, base.mean),
            std=new_std,
            interpolation=base.interpolation,
            source="options",
        )
    return loaded


def _collect_data(loaded, data, taps, fuse, batch_size, workers, device, limit_per_class, strict, *, quiet: bool, **save):  # noqa: ANN001, ANN202
    """Run the dataset collector with a rich progress bar (started once data loads); it saves the bundle."""
    from sowmeta.cli.main import console, err_console
    from sowmeta.cli.progress import progress_bar
    from sowmeta.collect import collect

    bar = progress_bar(console)
    task = bar.add_task("collect", total=None, info="")

    def progress(done: int, total: int) -> None:
        if quiet:
            return
        if not bar.live.is_started:  # shown once data loads, so input errors stay one line
            bar.start()
        elapsed = bar.tasks[0].elapsed or 1e-9
        bar.update(task, completed=done, total=total, info=f"{done / elapsed:,.0f} img/s")

    try:
        bundle, report = collect(
            loaded, data, taps=_parse_taps(taps), fuse=fuse, batch_size=batch_size, workers=workers,
            device=device, limit_per_class=limit_per_class, strict=strict, progress=progress,
            notice=None if quiet else (lambda line: err_console.print(f"[yellow]note[/]: {line}", soft_wrap=True)), **save,
        )
    finally:
        bar.stop()
    if report.skipped and not quiet:
        err_console.print(f"[yellow]skipped {len(report.skipped)} undecodable images[/] (first: {report.skipped[0]})", soft_wrap=True)
    return bundle, report


def register(group: click.Group) -> None:
    """Add the bundle-making commands to ``group``."""
    from sowmeta.cli.main import console, err_console, handle_errors

    @group.command()
    @click.option("--model", required=True, help="torchvision name (resnet50), cifar-resnet20..110, or package.module:factory.")
    @click.option("--weights", default="DEFAULT", show_default=True, help="DEFAULT, a torchvision weights name, a file, or none.")
    @click.option("--data", type=click.Path(path_type=Path), help="Class-per-folder image directory (Scenario A).")
    @click.option("--seeds", type=click.Path(path_type=Path), help="Seed images seeds/<label>/<img> (Scenario B, or C with one per class).")
    @click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
    @click.option("--taps", default="auto", show_default=True, help="auto, bn-inputs, conv-outputs, or module names/globs with :in/:out.")
    @click.option("--fuse", is_flag=True, help="Fold BatchNorm into convolutions first (inference-optimized model).")
    @click.option("--keep-rejected", is_flag=True, help="Keep seeds the model misclassifies.")
    @click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
    @click.option("--workers", default=2, show_default=True, type=click.IntRange(0))
    @click.option("--device", default="cpu", show_default=True)
    @click.option("--limit-per-class", type=click.IntRange(1), help="Use only the first N images of each class.")
    @click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
    @click.option("--shard-size", default=1 << 30, show_default=True, type=click.IntRange(1), help="Bytes per safetensors file.")
    @click.option("--crop", type=click.IntRange(1), help="Input resolution (overrides the weights' preprocessing).")
    @click.option("--resize", type=click.IntRange(1), help="Resize the short side first.")
    @click.option("--mean", help="Normalization mean, e.g. 0.485,0.456,0.406.")
    @click.option("--std", help="Normalization std.")
    @click.option("--strict", is_flag=True, help="Fail on the first undecodable image instead of skipping it.")
    @click.option("--labels-by-position", is_flag=True, help="Map class folders to classes by sorted order even when their names are not the model's labels.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out (only a sowmeta bundle is ever replaced).")
    @click.option("--base-model", help="Hub id ORG/NAME of the model's weights; the bundle's model card links to it.")
    @handle_errors
    def collect(model, weights, data, seeds, out, taps, fuse, keep_rejected, batch_size, workers, device, limit_per_class, dtype, shard_size, crop, resize, mean, std, strict, labels_by_position, overwrite, base_model) -> None:  # noqa: ANN001
        """Record per-class feature statistics of a model into a bundle."""
        from sowmeta.collect import collect_seeds
        from sowmeta.distributed import process_group
        from sowmeta.errors import ConfigError
        from sowmeta.outputs import check_output

        if (data is None) == (seeds is None):
            raise ConfigError("pass exactly one of --data (a labelled dataset) or --seeds (seed images)")
        check_output(out, "bundle", overwrite=overwrite, inputs=[("--data", data), ("--seeds", seeds)])
        save = {"out": out, "overwrite": overwrite, "dtype": dtype, "shard_bytes": shard_size}
        loaded = _load(model, weights, crop, resize, mean, std)
        if base_model is not None:
            from sowmeta.registry.records import check_name

            try:
                loaded.base_model = check_name(base_model)
            except ConfigError:
                raise ConfigError(f"--base-model {base_model!r} is not a Hub model id; use ORG/NAME") from None
        if seeds is None:
            with process_group(device) as (rank, _):
                bundle, report = _collect_data(loaded, data, taps, fuse, batch_size, workers, device, limit_per_class, strict,
                                               quiet=rank != 0, labels_by_position=labels_by_position, **save)
                if rank != 0:
                    return
        else:
            with process_group(device) as (rank, _):
                if rank != 0:  # a few seeds need no sharding: rank 0 alone checks them and writes the bundle
                    return
                bundle, report = collect_seeds(loaded, seeds, taps=_parse_taps(taps), fuse=fuse, keep_rejected=keep_rejected, device=device, **save)
            for r in report.rejected:
                err_console.print(f"[yellow]rejected seed[/] {r['path']}: class {r['class']}, predicted {r['predicted']}")
        empty = bundle.manifest.source.empty_classes
        if empty:
            err_console.print(f"[yellow]{len(empty)} classes have no images[/] (first: {empty[0]}); their rows are zeros")
        console.print(f"wrote [bold]{out}[/]: {report.images} images, {len(bundle.manifest.taps)} taps, scenario {bundle.manifest.source.scenario}")

    @group.command()
    @click.argument("bundle")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    @click.option("--all-taps", is_flag=True, help="List every tap, not the first 12.")
    @click.option("--registry", default=None, help="hub, local, or a local registry directory (for ORG/NAME references).")
    @handle_errors
    def inspect(bundle: str, as_json: bool, all_taps: bool, registry: str | None) -> None:
        """Show a bundle's model, classes, taps, channels, counts and size."""
        from sowmeta.summary import summarize

        s = summarize(_resolve(bundle, registry))
        if as_json:
            click.echo(json.dumps(s, indent=2))
            return
        from rich.table import Table

        m = s["model"]
        console.print(f"[bold]{s['path']}[/]  format {s['format_version']}  scenario {s['source']['scenario']} ({s['source']['collector']})")
        console.print(f"model {m['architecture']}  weights {m['weights']}  fused {m['fused']}  {m['fingerprint'][:23]}...")
        console.print(f"{m['num_classes']} classes, {s['images']} images, {len(s['taps'])} taps, {s['size_bytes']:,} bytes in {len(s['files'])} files, {s['dtype']}")
        if s["source"]["empty_classes"]:
            console.print(f"[yellow]empty classes[/]: {s['source']['empty_classes']}")
        classes = Table(title="classes")
        for col in ("index", "label", "images"):
            classes.add_column(col)
        for row in s["classes"][:20]:
            classes.add_row(str(row["index"]), row["label"], str(row["images"]))
        if len(s["classes"]) > 20:
            classes.add_row("...", f"{len(s['classes']) - 20} more", "")
        console.print(classes)
        taps_t = Table(title="taps")
        for col in ("name", "kind", "channels"):
            taps_t.add_column(col)
        shown = s["taps"] if all_taps else s["taps"][:12]
        for t in shown:
            taps_t.add_row(t["name"], t["kind"], str(t["channels"]))
        if len(shown) < len(s["taps"]):
            taps_t.add_row("...", f"{len(s['taps']) - len(shown)} more (--all-taps)", "")
        console.print(taps_t)

    @group.command()
    @click.argument("bundle")
    @click.option("--model", help="Also check the bundle against this model (defaults to none).")
    @click.option("--weights", default=None, help="Weights for --model (default: those the manifest names).")
    @click.option("--registry", default=None, help="hub, local, or a local registry directory (for ORG/NAME references).")
    @handle_errors
    def validate(bundle: str, model: str | None, weights: str | None, registry: str | None) -> None:
        """Check a bundle's schema, checksums and tensors, and optionally that it matches a model."""
        from sowmeta.bundle import Bundle
        from sowmeta.models import load_model_for

        path = _resolve(bundle, registry)
        b = Bundle.load(path, verify=True)
        console.print(f"[green]ok[/] {path}: schema, {len(b.manifest.files)} file checksums, values of {len(b.manifest.taps)} taps")
        if model is not None:
            b.check(load_model_for(b.manifest, model=model, weights=weights).module)
            console.print(f"[green]ok[/] matches {model}: taps, channels, classes, structure and fingerprint")

    @group.command("models")
    @click.argument("pattern", default="*")
    @handle_errors
    def models_cmd(pattern: str) -> None:
        """List the model names --model accepts (glob PATTERN)."""
        from sowmeta.models import list_models

        for name in list_models(pattern):
            click.echo(name)

    @group.command("taps")
    @click.option("--model", required=True)
    @click.option("--weights", default="none", show_default=True)
    @click.option("--taps", "spec", default="auto", show_default=True)
    @handle_errors
    def taps_cmd(model: str, weights: str, spec: str) -> None:
        """List the taps a specification resolves to on a model, with channels."""
        from sowmeta.collect import default_taps
        from sowmeta.taps import probe_channels

        loaded = _load(model, weights, None, None, None, None)
        taps = default_taps(loaded.module, _parse_taps(spec))
        channels = probe_channels(loaded.module, taps, loaded.preprocessing.crop)
        for t in taps:
            click.echo(f"{t.name}\t{t.kind}\t{channels.get(t.name)}")


def _resolve(ref: str, registry: str | None) -> Path:
    """A local bundle path, or a registry name (ORG/NAME[@REV]) pulled on demand."""
    from sowmeta.registry import resolve_bundle

    return resolve_bundle(ref, registry=registry)
