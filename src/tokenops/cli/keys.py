"""``tokenops keys create|list|revoke``: virtual keys for apps and teams."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, emit, ledger_for, load

app = typer.Typer(help="Create, list and revoke virtual keys.", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="A name for the key (who or what uses it).")],
    tags: Annotated[str, typer.Option("--tags", "-t", help="Default tags for its calls: team=search,env=prod")] = "",
    lock: Annotated[str, typer.Option("--lock", help="Tag names requests may not override, e.g. team")] = "",
    user: Annotated[str | None, typer.Option(
        "--user", help="For a key handed to one person: the end user of all its calls, whatever the "
        "request says (X-TokenOps-User, the body's user)")] = None,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a key. The key is printed once and stored only as a hash."""
    from tokenops.services.keys import create_key

    cfg = load(config)
    rec, key = create_key(ledger_for(cfg), name, tags, lock.split(","), end_user=user)
    tag_map = rec.tags
    if fmt is Format.json:
        emit([], fmt, payload={"id": rec.id, "key": key, "name": rec.name, "tags": tag_map,
                               "end_user": rec.end_user})
    elif fmt is Format.csv:
        emit([{"id": rec.id, "key": key, "name": rec.name}], fmt)
    else:
        who = f", end user {rec.end_user}" if rec.end_user else ""
        typer.echo(f"Created key {rec.id} ({rec.name}{who}). Copy it now, it is not shown again:\n\n  {key}\n")


@app.command("list")
def list_(config: ConfigOption = None, fmt: FormatOption = Format.table) -> None:
    """List keys (never the keys themselves: only their first characters)."""
    cfg = load(config)
    rows = [k.public() for k in ledger_for(cfg).list_keys()]
    emit(rows, fmt, title="Keys", columns=["id", "name", "prefix", "tags", "locked_tags", "end_user", "status",
                                               "created_at"])


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_…)")], config: ConfigOption = None) -> None:
    """Revoke a key: its calls get 401 (a running gateway notices within a few seconds)."""
    from tokenops.services.keys import revoke_key

    revoke_key(ledger_for(load(config)), key_id)
    typer.echo(f"Revoked {key_id}.")
