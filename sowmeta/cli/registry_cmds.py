"""``sowmeta push``, ``pull``, ``list``: publish and fetch bundles (the Hub or the local registry)."""

from __future__ import annotations

from typing import Any

import click

from sowmeta.cli.options import aliased_option, emit_json, plain, registry_option, report_options
from sowmeta.cli.terminal import console, err_console, handle_errors

__all__ = ["COMMANDS", "push_cmd", "pull_cmd", "list_cmd"]


@click.command("push")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=str))
@click.argument("name")
@click.option("--revision", default=None, help="Branch (Hub) or ref (local) to move. [main]")
@click.option("--tag", default=None, help="Also tag the pushed revision (e.g. v1); a tag never moves, and a taken tag is refused before anything is pushed. [unset]")
@click.option("--update-model-card", is_flag=True, help="Add or refresh a section linking the bundle in the repository's own README (Hub, subfolder bundles).")
@click.option("--with-weights", type=click.Path(dir_okay=False, exists=True, path_type=str),
              help="The weights file the bundle was recorded on: uploaded to the model's repository in the same commit when "
                   "it is not there yet (Hub, ORG/NAME/SUBFOLDER; its sha256 is checked). [unset: the repository must hold them]")
@click.option("--private", is_flag=True, help="Create the Hub repository private.")
@click.option("-m", "--message", default=None, help="Commit message. [a summary of the bundle]")
@registry_option
@click.option("--license", "license_", default="other", show_default=True, help="License id for the model card (Hub).")
@report_options
@handle_errors
def push_cmd(bundle: str, name: str, revision: str | None, tag: str | None, update_model_card: bool, with_weights: str | None, private: bool,
             message: str | None, registry: str | None, license_: str, as_json: bool, quiet: bool) -> None:
    """Publish the bundle directory BUNDLE as NAME (ORG/NAME, or ORG/NAME/SUBFOLDER inside a model's own repository)."""
    from sowmeta.registry import push

    r = push(bundle, name, revision=revision, tag=tag, private=private, message=message, registry=registry, license=license_,
             update_model_card=update_model_card, with_weights=with_weights)
    if as_json:
        emit_json(r)
        return
    where = r.url or str(r.path)
    console.print(f"pushed [bold]{r.name}@{r.revision}[/] -> commit {r.commit} ({r.backend}) {where}", soft_wrap=True)

@click.command("pull")
@click.argument("name")
@click.option("--revision", default=None, help="Branch, tag or commit to fetch (the same as NAME@REVISION). [main]")
@aliased_option("--out", "--to", dest="out", type=click.Path(path_type=str),
                help="Copy the verified bundle into this new (or empty) directory. [unset: print the cached copy's directory]")
@registry_option
@report_options
@handle_errors
def pull_cmd(name: str, revision: str | None, out: str | None, registry: str | None, as_json: bool, quiet: bool) -> None:
    """Fetch and verify NAME (ORG/NAME[/SUBFOLDER][@REVISION]); prints its directory."""
    from sowmeta.registry import pull

    r = pull(name, revision=revision, to=out, registry=registry)
    if as_json:
        emit_json(r)
        return
    if not quiet:
        err_console.print(f"pulled [bold]{r.name}@{r.revision}[/] (commit {r.commit}, {r.backend}, verified)", soft_wrap=True)
    click.echo(str(r.path))

@click.command("list")
@registry_option
@click.option("--author", default=None, help="Only bundles of this user or organization. [all]")
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
    console.print(_table(entries, registry))


def _table(entries: list[Any], registry: str | None) -> Any:
    """A rich table of ``BundleEntry`` rows: Hub repositories, or local revisions and cached pulls."""
    from rich.table import Column, Table

    from sowmeta.cli.safe_text import shown

    from sowmeta import env
    from sowmeta.registry.backend import choose_backend

    hub = entries[0].backend == "hub"
    roots = {"local": "local registry", "hub-cache": "Hub cache"}
    folders = {"local": getattr(choose_backend(registry), "root", None), "hub-cache": env.hf_hub_cache()}
    shown_in = sorted({e.backend for e in entries if e.backend in roots}, key=list(roots).index)
    where = {b: f"{roots[b]} {folders[b]}" for b in shown_in if folders[b] is not None}
    table = Table(Column("name", no_wrap=True), "refs", Column("revision", no_wrap=True), Column("updated", no_wrap=True),
                  caption="; ".join(where.values()) or None)
    if hub:
        table.add_column("private")
        table.add_column("url", overflow="fold")
    else:
        table.add_column("source")
    for e in entries:
        commit = (e.commit or "")[:12] if console.is_terminal else e.commit or ""  # a prefix resolves; a log keeps the whole id
        row = [shown(e.name), shown(", ".join(e.refs)), commit, e.updated or ""]
        extra = ["yes" if e.private else "no", e.url or ""] if hub else [roots.get(e.backend, e.backend)]
        table.add_row(*row, *extra)
    return table


COMMANDS = [push_cmd, pull_cmd, list_cmd]
