"""``sowmeta push``, ``pull``, ``list``: publish and fetch bundles (the Hub or the local registry)."""

from __future__ import annotations

from typing import Any

import click

from sowmeta.cli.options import emit_json, plain, registry_option, report_options
from sowmeta.cli.terminal import console, err_console, handle_errors

__all__ = ["COMMANDS", "push_cmd", "pull_cmd", "list_cmd"]


@click.command("push")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=str))
@click.argument("name")
@click.option("--revision", default=None, help="Branch (Hub) or ref (local) to move; default main.")
@click.option("--tag", default=None, help="Also tag the pushed revision (e.g. v1); a tag never moves.")
@click.option("--update-model-card", is_flag=True, help="Add or refresh a section linking the bundle in the repository's own README (Hub, subfolder bundles).")
@click.option("--private", is_flag=True, help="Create the Hub repository private.")
@click.option("-m", "--message", default=None, help="Commit message.")
@registry_option
@click.option("--license", "license_", default="other", show_default=True, help="License id for the model card (Hub).")
@report_options
@handle_errors
def push_cmd(bundle: str, name: str, revision: str | None, tag: str | None, update_model_card: bool, private: bool, message: str | None,
             registry: str | None, license_: str, as_json: bool, quiet: bool) -> None:
    """Publish the bundle directory BUNDLE as NAME (ORG/NAME, or ORG/NAME/SUBFOLDER inside a model's own repository)."""
    from sowmeta.registry import push

    r = push(bundle, name, revision=revision, tag=tag, private=private, message=message, registry=registry, license=license_,
             update_model_card=update_model_card)
    if as_json:
        emit_json(r)
        return
    where = r.url or str(r.path)
    console.print(f"pushed [bold]{r.name}@{r.revision}[/] -> {r.commit[:12]} ({r.backend}) {where}", soft_wrap=True)

@click.command("pull")
@click.argument("name")
@click.option("--to", "to", default=None, type=click.Path(path_type=str), help="Copy the bundle into this new (or empty) directory.")
@registry_option
@report_options
@handle_errors
def pull_cmd(name: str, to: str | None, registry: str | None, as_json: bool, quiet: bool) -> None:
    """Fetch and verify NAME (ORG/NAME[/SUBFOLDER][@REVISION]); prints its directory."""
    from sowmeta.registry import pull

    r = pull(name, to=to, registry=registry)
    if as_json:
        emit_json(r)
        return
    if not quiet:
        err_console.print(f"pulled [bold]{r.name}@{r.revision}[/] ({r.commit[:12]}, {r.backend}, verified)", soft_wrap=True)
    click.echo(str(r.path))

@click.command("list")
@registry_option
@click.option("--author", default=None, help="Only bundles of this user or organization.")
@report_options
@handle_errors
def list_cmd(registry: str | None, author: str | None, as_json: bool, quiet: bool) -> None:
    """List the local registry's bundles and those pulled into the cache (with the Hub: its sowmeta repositories)."""
    from sowmeta.registry import list_bundles

    entries = list_bundles(registry=registry, author=author)
    if as_json:
        emit_json({"bundles": [plain(e) for e in entries]})
        return
    if not entries:
        console.print("no bundles")
        return
    console.print(_table(entries))


def _table(entries: list[Any]) -> Any:
    """A rich table of ``BundleEntry`` rows: Hub repositories, or local revisions and cached pulls."""
    from rich.table import Column, Table

    from sowmeta.cli.safe_text import shown

    hub = entries[0].backend == "hub"
    roots = {"local": "local registry", "hub-cache": "Hub cache"}
    where = {}
    for e in entries:
        if e.backend in roots and e.path is not None and e.backend not in where:
            where[e.backend] = f"{roots[e.backend]} {e.path.parents[3 if e.backend == 'local' else 2]}"
    table = Table(Column("name", no_wrap=True), "refs", Column("revision", no_wrap=True), "updated",
                  caption="; ".join(where.values()) or None)
    if hub:
        table.add_column("private")
        table.add_column("url", overflow="fold")
    else:
        table.add_column("source")
    for e in entries:
        row = [shown(e.name), shown(", ".join(e.refs)), (e.commit or "")[:12], e.updated or ""]
        extra = ["yes" if e.private else "no", e.url or ""] if hub else [roots.get(e.backend, e.backend)]
        table.add_row(*row, *extra)
    return table


COMMANDS = [push_cmd, pull_cmd, list_cmd]
