"""``sowmeta synthesize``: images of chosen classes from a model and its bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sowmeta.cli.options import ListingOption, device_option, emit_json, model_options, registry_option, report_options

__all__ = ["register"]


def _classes(text: str | None) -> list[str] | None:
    from sowmeta.errors import ConfigError

    if text is None or text.strip() == "all":
        return None
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    if not chosen:
        raise ConfigError(f"--classes {text!r} names no class; pass indices or labels (3,5 or cat,dog), or 'all'")
    return chosen


def _preset_names() -> list[str]:
    from sowmeta.synth.config import PRESETS

    return ["auto", *PRESETS.names()]


def _param_names() -> list[str]:
    from sowmeta.synth.param import PARAMETERIZATIONS

    return PARAMETERIZATIONS.names()


def _feature_loss_names() -> list[str]:
    from sowmeta.synth.losses import FEATURE_LOSSES

    return FEATURE_LOSSES.names()


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


def register(group: click.Group) -> None:
    """Add ``synthesize`` to ``group``."""
    from sowmeta.cli.main import console, err_console, handle_errors, note_printer

    @group.command()
    @click.option("--bundle", help="Bundle directory or registry name ORG/NAME[/SUBFOLDER][@REVISION] (pulled on demand).")
    @registry_option
    @model_options(what="the bundle (default: the one the bundle's manifest names; --weights alone keeps that model)")
    @click.option("--classes", default="all", show_default=True, help="Comma-separated class indices or labels, or 'all'.")
    @click.option("--per-class", default=50, show_default=True, type=click.IntRange(1), help="Images per class.")
    @click.option("--out", required=True, type=click.Path(path_type=Path), help="HDF5 file to write (resumed if unfinished).")
    @click.option("--mode", type=click.Choice(["cc", "global", "di"]), default="cc", show_default=True,
                  help="cc: class-conditional bundle statistics; global: the bundle's global ones; di: BatchNorm running statistics.")
    @click.option("--mixed/--single-class", default=None, help="Mix classes within a batch (default: single-class for cc, mixed otherwise).")
    @click.option("--preset", default="auto", show_default=True, cls=ListingOption, names=_preset_names,
                  help="Default hyper-parameters; auto picks cifar for inputs of 64 px or less.")
    @click.option("--iterations", type=click.IntRange(1), help="Optimization steps per batch [imagenet 2000, cifar 2000].")
    @click.option("--batch-size", type=click.IntRange(1), help="Images per batch [64].")
    @click.option("--lr", type=float, help="Adam learning rate (cosine schedule) [imagenet 0.25, cifar 0.1].")
    @click.option("--alpha-tv", type=float, help="Total-variation weight [imagenet 1e-4, cifar 5e-2].")
    @click.option("--alpha-l2", type=float, help="L2 image prior weight [imagenet 1e-5, cifar 0].")
    @click.option("--alpha-cc", type=float, help="Statistics-matching weight [imagenet 0.01, cifar 1].")
    @click.option("--alpha-image-var", type=float,
                  help="Weight (relative to --alpha-cc) of matching how much a class's images differ from each other (bundles of format 1.3) [0: off].")
    @click.option("--first-tap-multiplier", type=float, help="Extra weight of the first tap [imagenet 1, cifar 10].")
    @click.option("--tap-weight", multiple=True, help="Per-tap weight TAP=W (name or glob); repeatable.")
    @click.option("--tap-decay", type=float, help="Weight of the last tap relative to the first, geometric in between [1: equal].")
    @click.option("--feature-loss", cls=ListingOption, names=_feature_loss_names, help="F_l, the distance of feature statistics [eq7: paper Eq. 7].")
    @click.option("--jitter", type=click.IntRange(0), help="Random shift in pixels [imagenet 30, cifar 2].")
    @click.option("--jitter-wrap/--no-jitter-wrap", default=None,
                  help="The shift rolls the image around (DeepInversion's); --no-jitter-wrap shifts a window over a canvas JITTER px larger instead [imagenet wrap, cifar no wrap].")
    @click.option("--flip/--no-flip", default=None, help="Random horizontal flips [on].")
    @click.option("--multires", type=click.FloatRange(0, 1, max_open=True), help="Fraction of iterations at half resolution [0].")
    @click.option("--zoom", type=click.FloatRange(0, 1, max_open=True), help="Random-resized crop: the crop's side is in [1 - ZOOM, 1] of the image's [0: off].")
    @click.option("--color-shift", type=click.FloatRange(0, 1, max_open=True), help="Random per-channel contrast in [1 - C, 1] and offset [0: off].")
    @click.option("--param", cls=ListingOption, names=_param_names, help="How the image is optimized: pixel (the paper's) or fourier (decorrelated colour spectrum) [pixel].")
    @click.option("--jpeg-quality", type=click.IntRange(0, 100),
                  help="Match the statistics through a JPEG encoding of this quality (that of the data they came from; `collect` notes it) [0: off].")
    @click.option("--jpeg-subsampling", type=click.Choice(["4:2:0", "4:2:2", "4:4:4"]), help="Chroma subsampling of that encoding [4:2:0].")
    @click.option("--init", "init", default="noise", show_default=True, help="noise, or a folder <label>/<image> of seed images or sketches.")
    @click.option("--init-noise", type=float, help="Noise std added to initial images [0.2].")
    @click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default="none", show_default=True, help="Autocast on CUDA.")
    @click.option("--seed", default=0, show_default=True, type=int, help="Makes runs repeatable.")
    @click.option("--save-every", default=0, show_default=True, type=click.IntRange(0), help="Keep intermediate images every N iterations.")
    @click.option("--png", type=click.Path(path_type=Path), help="Also write PNGs to DIR/<class>/.")
    @click.option("--grid", type=click.Path(path_type=Path), help="Also write a contact sheet PNG (8 images per class).")
    @device_option
    @click.option("--no-fingerprint-check", is_flag=True, help="Accept a bundle recorded with other weights of the same architecture (taps, channels and structure are still checked).")
    @click.option("--allow-low-confidence", is_flag=True, help="Exit 0 even when the teacher recognises the images no better than chance.")
    @click.option("--overwrite", is_flag=True, help="Replace --out, --png and --grid (only sowmeta's own) and discard an unfinished run.")
    @report_options
    @handle_errors
    def synthesize(bundle, registry, model, weights, model_args, classes, per_class, out, mode, mixed, preset, iterations, batch_size, lr, alpha_tv, alpha_l2, alpha_cc,
                   alpha_image_var, first_tap_multiplier, tap_weight, tap_decay, feature_loss, jitter, jitter_wrap, flip, multires, zoom, color_shift, param, jpeg_quality, jpeg_subsampling, init, init_noise, amp, seed,
                   save_every, png, grid, device, no_fingerprint_check, allow_low_confidence, overwrite, as_json, quiet) -> None:  # noqa: ANN001
        """Synthesize images of chosen classes from a model and its class-conditional statistics."""
        from sowmeta.distributed import is_main_process
        from sowmeta.errors import ConfigError, SynthesisError
        from sowmeta.outputs import check_distinct, check_output
        from sowmeta.synth import SynthConfig
        from sowmeta.synth import synthesize as run
        from sowmeta.data.export import contact_sheet, readable_scale, save_contact_sheet, write_pngs
        from sowmeta.synth.job import open_model

        if bundle is None and mode != "di":
            raise ConfigError(f"mode {mode} needs --bundle (a directory or org/name); only --mode di works from the model alone")
        if jpeg_subsampling is not None and not jpeg_quality:
            raise ConfigError("--jpeg-subsampling describes the encoding of --jpeg-quality; pass that too (the data's JPEG quality)")
        check_distinct([("--out", out), ("--png", png), ("--grid", grid)])
        for what, path, kind in (("--png", png, "png-tree"), ("--grid", grid, "png")):
            if path is not None:
                check_output(path, kind, overwrite=overwrite, what=what)
        init_dir = None if init == "noise" else Path(init)
        if init_dir is not None and not init_dir.is_dir():
            raise ConfigError(f"--init must be 'noise' or a folder of initial images; {init_dir} is not a directory")
        from sowmeta.models import parse_model_args

        opened = open_model(bundle, model=model, weights=weights, args=parse_model_args(model_args) if model_args else None, registry=registry)
        overrides = {
            "iterations": iterations, "batch_size": batch_size, "lr": lr, "alpha_tv": alpha_tv, "alpha_l2": alpha_l2, "alpha_cc": alpha_cc,
            "alpha_image_var": alpha_image_var, "first_tap_multiplier": first_tap_multiplier, "feature_loss": feature_loss, "jitter": jitter, "jitter_wrap": jitter_wrap, "flip": flip, "multires": multires,
            "init_noise": init_noise, "tap_decay": tap_decay, "zoom": zoom, "color_shift": color_shift, "param": param,
            "jpeg_quality": jpeg_quality, "jpeg_subsampling": jpeg_subsampling,
        }
        config = SynthConfig.preset(
            preset, crop=opened.crop, mode=mode, mixed=mixed, tap_weights=SynthConfig.parse_tap_weights(tap_weight),
            init="noise" if init_dir is None else "images", amp=amp, seed=seed, save_every=save_every,
            check_fingerprint=not no_fingerprint_check, **{k: v for k, v in overrides.items() if v is not None},
        )
        bar, update = _live_display(console, quiet or as_json)
        notice = note_printer(quiet or as_json)  # the note comes before the first progress update, so before the bars

        with bar:
            result = run(opened.located, opened.model, classes=_classes(classes), per_class=per_class, config=config, out=out, device=device,
                         overwrite=overwrite, init_images=init_dir, progress=update, notice=notice)
        if not is_main_process():  # under torchrun, rank 0 reports and exports
            return
        if png is not None:
            write_pngs(out, png, overwrite=overwrite)
        if grid is not None:
            images = result.images()
            sheet = contact_sheet(images, result.labels, names=result.class_labels, scale=readable_scale(images.shape[-1]))
            save_contact_sheet(sheet, grid, overwrite=overwrite)
        chosen = SynthConfig.preset_name(preset, opened.crop)
        if as_json:
            emit_json({"out": out, "images": len(result.labels), "mode": mode, "preset": chosen, "teacher_top1": result.teacher_accuracy,
                       "chance": result.chance, "failed": result.failed, "seconds": result.seconds,
                       "resumed_batches": result.resumed_batches, "png": png, "grid": grid})
        else:
            resumed = f" ({result.resumed_batches} batches resumed)" if result.resumed_batches else ""
            console.print(
                f"wrote [bold]{out}[/]: {len(result.labels)} images, mode {mode}, preset {chosen}, "
                f"teacher top-1 {result.teacher_accuracy:.1%}, {result.seconds:.0f} s{resumed}"
            )
        if result.failed and not allow_low_confidence:
            raise SynthesisError(
                f"the teacher recognises only {result.teacher_accuracy:.1%} of the images (chance is {result.chance:.1%}): the run failed; "
                f"{out} is kept for inspection. Try a lower --lr or more --iterations, or pass --allow-low-confidence"
            )
        if not (quiet or as_json) and result.teacher_accuracy < 0.5:
            err_console.print("[yellow]the teacher recognises fewer than half of the images[/]; try more --iterations or a lower --alpha-cc")
