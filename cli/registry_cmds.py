"""``sowmeta push``, ``pull``, ``list``: publish and fetch bundles (the Hub or the local registry)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

__all__ = ["register"]

_REGISTRY_HELP = "'hub', 'local' or a local registry directory (default: $SOWMETA_REGISTRY, else the local registry)."


def _plain(record: Any) -> dict[str, Any]:
    """A result dataclass as JSON-ready values."""
    return {k: (str(v) if v is not None and not isinstance(v, (str, int, bool, list, tuple)) else v) for k, v in asdict(record).items()}


def register(group: click.Group) -> None:
    """Add ``push``, ``pull`` and ``list`` to the ``sowmeta`` command group."""
    from sowmeta.cli.main import console, err_console, handle_errors

    @group.command("push")
    @click.argument("bundle", type=click.Path(file_okay=False, path_type=str))
    @click.argument("name")
    @click.option("--revision", default=None, help="Branch (Hub) or ref (local) to move; default main.")
    @click.option("--private", is_flag=True, help="Create the Hub repository private.")
    @click.option("-m", "--message", default=None, help="Commit message.")
    @click.option("--registry", default=None, help=_REGISTRY_HELP)
    @click.option("--license", "license_", default="other", show_default=True, help="License id for the model card (Hub).")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @handle_errors
    def push_cmd(bundle: str, name: str, revision: str | None, private: bool, message: str | None,
                 registry: str | None, license_: str, as_json: bool) -> None:
        """Publish the bundle directory BUNDLE as NAME (ORG/NAME)."""
        from sowmeta.registry import push

        r = push(bundle, name, revision=revision, private=private, message=message, registry=registry, license=license_)
        if as_json:
            click.echo(json.dumps(_plain(r), indent=2))
            return
        where = r.url or str(r.path)
        console.print(f"pushed [bold]{r.name}@{r.revision}[/] -> {r.commit[:12]} ({r.backend}) {where}", soft_wrap=True)

    @group.command("pull")
    @click.argument("name")
    @click.option("--to", "to", default=None, type=click.Path(path_type=str), help="Copy the bundle into this new directory.")
    @click.option("--registry", default=None, help=_REGISTRY_HELP)
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @handle_errors
    def pull_cmd(name: str, to: str | None, registry: str | None, as_json: bool) -> None:
        """Fetch and verify NAME (ORG/NAME or ORG/NAME@REVISION); prints its directory."""
        from sowmeta.registry import pull

        r = pull(name, to=to, registry=registry)
        if as_json:
            click.echo(json.dumps(_plain(r), indent=2))
            return
        err_console.print(f"pulled [bold]{r.name}@{r.revision}[/] ({r.commit[:12]}, {r.backend}, verified)", soft_wrap=True)
        click.echo(str(r.path))

    @group.command("list")
    @click.option("--registry", default=None, help=_REGISTRY_HELP)
    @click.option("--author", default=None, help="Only bundles of this user or organization.")
    @click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
    @handle_errors
    def list_cmd(registry: str | None, author: str | None, as_json: bool) -> None:
        """List the local registry's bundles and those pulled into the cache (with the Hub: its sowmeta repositories)."""
        from sowmeta.registry import list_bundles

        entries = list_bundles(registry=registry, author=author)
        if as_json:
            click.echo(json.dumps([_plain(e) for e in entries], indent=2))
            return
        if not entries:
            console.print("no bundles")
            return
        console.print(_table(entries))


def _table(entries: list[Any]) -> Any:
    """A rich table of ``BundleEntry`` rows: Hub repositories, or local revisions and cached pulls."""
    from rich.table import Column, Table

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
        row = [e.name, ", ".join(e.refs), (e.commit or "")[:12], e.updated or ""]
        extra = ["yes" if e.private else "no", e.url or ""] if hub else [roots.get(e.backend, e.backend)]
        table.add_row(*row, *extra)
    return table
