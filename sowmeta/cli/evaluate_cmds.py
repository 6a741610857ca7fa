"""``sowmeta evaluate`` and ``sowmeta distill``: score a synthesized set, and distill a student from it.

Every field of ``DistillConfig`` is an option of ``distill`` (``record_options``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sowmeta.cli.options import (
    aliased_option,
    device_option,
    emit_json,
    model_options,
    record_options,
    record_values,
    report_options,
    workers_option,
)
from sowmeta.cli.progress import LiveProgress
from sowmeta.cli.safe_text import shown
from sowmeta.cli.terminal import console, err_console, handle_errors
from sowmeta.distillation.config import DistillConfig

__all__ = ["COMMANDS", "evaluate", "distill", "pair_models"]

REFERENCE_HELP = "Real images, class-per-folder (the same classes as the data)."


def pair_models(models: tuple[str, ...], weights: tuple[str, ...]) -> list[tuple[str, str]]:
    """Pair repeated ``--model`` and ``--weights`` options in order; without any ``--weights`` every model gets DEFAULT."""
    from sowmeta.errors import ConfigError

    if weights and len(weights) != len(models):
        raise ConfigError(
            f"{len(models)} --model but {len(weights)} --weights; give one --weights per --model, in the same order (or none for DEFAULT)"
        )
    return list(zip(models, weights or ("DEFAULT",) * len(models)))


def _load(name: str, weights: str | None) -> Any:
    from sowmeta.models import load_model

    return load_model(name, weights=weights)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _classes(text: str) -> list[str] | None:
    if text.strip() in ("", "all"):
        return None
    return [c.strip() for c in text.split(",") if c.strip()]


def _short_names(networks: list[str]) -> list[str]:
    """Column headers: the model name without its weights, numbered where two share a name."""
    names = [n.partition("=")[0] for n in networks]
    return [f"{n}#{i + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _render_report(console: Any, report: Any, quiet: bool = False) -> None:
    from rich.table import Table

    r = report
    present = sum(1 for c in r.counts if c)
    console.print(f"[bold]{shown(r.data)}[/] ({r.kind}): {r.images} images of {present} classes, {r.seconds:.1f} s")
    for note in r.notes:
        console.print(f"[yellow]note[/]: {shown(note)}", soft_wrap=True)
    if r.accuracy:
        acc = Table(title="top-1 accuracy")
        acc.add_column("network")
        acc.add_column("top-1", justify="right")
        real = any(a.real_top1 is not None for a in r.accuracy)
        if real:
            acc.add_column("on as many real images", justify="right")
        for a in r.accuracy:
            acc.add_row(a.network, f"{a.top1:.2%}", *([_fmt(a.real_top1, ".2%")] if real else []))
        console.print(acc)
    if r.inception_score is not None:
        s = r.inception_score
        std = f" ± {s.std:.3f}" if s.std is not None else ""
        console.print(f"Inception-Score-style score {s.mean:.3f}{std} ({s.splits} splits), softmax of {s.network}")
    console.print(f"features for distances and diversity: {r.feature_network}")
    if r.distances is not None:
        d = r.distances
        console.print(
            f"vs {d.reference} ({d.reference_images} images): Fréchet distance {d.frechet:.4g}, "
            f"KID {d.kid_mean:.4g} ± {d.kid_std:.2g} (subsets of {d.kid_subset_size}), mean per-class FD {_fmt(d.mean_class_frechet, '.4g')}"
        )
    c = r.class_distances
    if c is not None:
        console.print(
            f"per class, against the rest of the reference at equal sizes ({sum(c.images)} images): "
            f"mean KID {_fmt(c.mean_kid, '.4g')} (real images: {_fmt(c.mean_kid_real, '.4g')}), "
            f"mean FD {_fmt(c.mean_frechet, '.4g')} (real images: {_fmt(c.mean_frechet_real, '.4g')})"
        )
    n = r.naturalness
    if n is not None:
        console.print(
            f"naturalness at {n.size} px (real images fitted to it): high-frequency power {n.data.hf_fraction:.3f} (real {n.reference.hf_fraction:.3f}, "
            f"ratio {_fmt(n.hf_ratio, '.2f')}), total variation per pixel {n.data.tv_per_pixel:.3f} (real {n.reference.tv_per_pixel:.3f}, "
            f"ratio {_fmt(n.tv_ratio, '.2f')})"
        )
    if quiet:
        return
    per = Table(title="per class: top-1 of each network, Fréchet distance, diversity")
    per.add_column("class")
    per.add_column("images", justify="right")
    for h in [a.network for a in r.accuracy]:
        per.add_column(h, justify="right")
    if r.distances is not None:
        per.add_column("FD", justify="right")
    per.add_column("diversity", justify="right")
    if r.diversity is not None and r.diversity.reference_per_class is not None:
        per.add_column("diversity (reference)", justify="right")
    for k, name in enumerate(r.classes):
        if not r.counts[k]:
            continue
        row = [f"{k} {shown(name)}", str(r.counts[k])]
        row += [_fmt(a.per_class[k], ".1%") for a in r.accuracy]
        if r.distances is not None:
            row.append(_fmt(r.distances.per_class_frechet[k], ".4g"))
        if r.diversity is not None:
            row.append(_fmt(r.diversity.per_class[k], ".4g"))
            if r.diversity.reference_per_class is not None:
                row.append(_fmt(r.diversity.reference_per_class[k], ".4g"))
        per.add_row(*row)
    console.print(per)
    c = r.class_distances
    if c is not None:
        floor = Table(title=f"per class, n images of the set and n real ones against the rest of {Path(r.distances.reference).name}")
        for h in ("class", "n", "KID", "KID real", "FD", "FD real"):
            floor.add_column(h, justify="left" if h == "class" else "right")
        for k, name in enumerate(r.classes):
            if c.images[k]:
                floor.add_row(f"{k} {shown(name)}", str(c.images[k]), *(_fmt(v[k], ".3g") for v in (c.kid, c.kid_real, c.frechet, c.frechet_real)))
        console.print(floor)
    if r.sheets:
        console.print(f"wrote {len(r.sheets)} contact sheets to {Path(r.sheets[0]).parent}")


@click.command("evaluate")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="An HDF5 synthesis file, or a class-per-folder image directory.")
@model_options(multiple=True, what="a classifier to measure accuracy with (the first also gives the IS-style score)",
               model_default="none; at least one --model or --feature-model")
@click.option("--reference", type=click.Path(path_type=Path), help=f"{REFERENCE_HELP} Needed for Fréchet distance and KID. [unset]")
@click.option("--feature-model", help="Model whose penultimate features feed FD, KID and diversity (e.g. inception_v3); "
                                      "the report names it. [the first --model]")
@click.option("--feature-weights", help="Weights for --feature-model (as --weights). [DEFAULT]")
@click.option("--classes", default="all", show_default=True, help="Comma-separated class indices or names, or 'all'.")
@click.option("--sheets", type=click.Path(path_type=Path), help="Write one contact-sheet PNG per class into this directory. [unset]")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1), help="Images per forward pass.")
@workers_option
@device_option
@click.option("--kid-subsets", default=100, show_default=True, type=click.IntRange(1), help="Random subsets KID averages over.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the random subsets of IS, KID and diversity.")
@report_options
@handle_errors
def evaluate(data, model, weights, reference, feature_model, feature_weights, classes, sheets, batch_size, workers, device,  # noqa: ANN001
             kid_subsets, seed, as_json, quiet) -> None:  # noqa: ANN001
    """Score an image set (a synthesis file or an image folder): accuracy, IS-style score, FD, KID, diversity."""
    from sowmeta.errors import ConfigError
    from sowmeta.evaluation import evaluate as run

    if not model and feature_model is None:
        raise ConfigError("pass at least one --model NAME (with --weights W), or --feature-model for distances only")
    loaded = [_load(name, w) for name, w in pair_models(model, weights)]
    feat = _load(feature_model, "DEFAULT" if feature_weights is None else feature_weights) if feature_model is not None else None
    with LiveProgress(err_console, ["evaluate"], quiet=quiet or as_json) as bar:
        report = run(data, loaded, reference=reference, feature_model=feat, classes=_classes(classes), sheets=sheets,
                     batch_size=batch_size, device=device, workers=workers, kid_subsets=kid_subsets, seed=seed,
                     progress=lambda stage, done, total: bar.update("evaluate", description=stage, completed=done, total=total))
    if as_json:
        emit_json(report.to_dict())
    else:
        _render_report(console, report, quiet)


def _render_distill(result: Any, student: str, as_json: bool, quiet: bool) -> None:
    from rich.table import Table

    m = result.metrics
    if as_json:
        emit_json({"out": result.out, "student": result.student_path, "metrics": m})
        return
    if not quiet:
        rows = list(enumerate(zip(m["lr"], m["train_loss"], m["test_accuracy"]), start=1))
        table = Table(title="test top-1 per epoch" + (" (last 10)" if len(rows) > 10 else ""))
        for col in ("epoch", "lr", "KD loss", "test top-1"):
            table.add_column(col, justify="right")
        for e, (lr_e, loss_e, acc_e) in rows[-10:]:
            table.add_row(str(e), f"{lr_e:.4g}", f"{loss_e:.4g}", f"{acc_e:.2%}")
        console.print(table)
    console.print(
        f"student {student}: test top-1 {m['final_test_accuracy']:.2%} after {len(m['test_accuracy'])} epochs "
        f"(best {m['best_test_accuracy']:.2%}; teacher {m['teacher_test_accuracy']:.2%}); "
        f"wrote [bold]{result.student_path}[/] and {result.metrics_path.name}"
    )


@click.command("distill")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="An HDF5 synthesis file (or any class-per-folder image directory) to distill on.")
@model_options(required=True, what="the teacher (the network to distill)")
@click.option("--student", required=True, help="Model name of the student, trained from random weights (e.g. cifar-resnet20).")
@aliased_option("--reference", "--test", dest="reference", required=True, type=click.Path(path_type=Path),
                help=f"{REFERENCE_HELP} The student is scored on them after every epoch. [required]")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory: checkpoint.pt, student.safetensors, metrics.json.")
@record_options(DistillConfig)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last finished epoch.")
@click.option("--overwrite", is_flag=True, help="Discard a previous run in --out and start over.")
@device_option
@workers_option
@report_options
@handle_errors
def distill(**options: Any) -> None:
    """Distill the teacher (--model, --weights) into a new student on synthesized images; score it on real test images."""
    from sowmeta.distillation import distill as run
    from sowmeta.models import load_model, parse_model_args

    config = DistillConfig(**record_values(DistillConfig, options))
    o = options
    loaded = load_model(o["model"], weights="DEFAULT" if o["weights"] is None else o["weights"], args=parse_model_args(o["model_args"]))
    with LiveProgress(err_console, ["epoch", "batch"], quiet=o["quiet"] or o["as_json"]) as bar:

        def progress(p: Any) -> None:
            bar.update("batch", completed=p.batch, total=p.batches, info=f"loss {p.loss:.4g}")
            if p.test_accuracy is not None:
                bar.update("epoch", completed=p.epoch, total=p.epochs, info=f"test top-1 {p.test_accuracy:.2%}")

        result = run(o["data"], loaded, o["student"], test=o["reference"], out=o["out"], config=config, resume=o["resume"], overwrite=o["overwrite"],
                     device=o["device"], workers=o["workers"], progress=progress)
    _render_distill(result, o["student"], o["as_json"], o["quiet"])


COMMANDS = [evaluate, distill]
