"""``tokenops keys create|list|revoke``: virtual keys for apps and teams."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, emit, ledger_for, load
from tokenops.errors import UsageError

app = typer.Typer(help="Create, list and revoke virtual keys.", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="A name for the key (who or what uses it).")],
    tags: Annotated[str, typer.Option("--tags", "-t", help="Default tags for its calls: team=search,env=prod")] = "",
    lock: Annotated[str, typer.Option("--lock", help="Tag names requests may not override, e.g. team")] = "",
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a key. The key is printed once and stored only as a hash."""
    from tokenops import keys as keymod
    from tokenops.tags import TagError, check_name, parse_tags

    if not name.strip():
        raise UsageError("--name must not be empty")
    try:
        tag_map = parse_tags(tags, what="--tags")
        locked = tuple(check_name(n.strip()) for n in lock.split(",") if n.strip())
    except TagError as exc:
        raise UsageError(str(exc)) from None
    missing = [n for n in locked if n not in tag_map]
    if missing:
        raise UsageError(f"--lock names {', '.join(missing)}, which --tags does not set")
    cfg = load(config)
    key = keymod.generate()
    rec = keymod.KeyRecord(
        id=keymod.new_key_id(), name=name.strip(), key_hash=keymod.hash_key(key), key_prefix=key[:10],
        tags=tag_map, locked_tags=locked, created_at=datetime.now(UTC),
    )  # fmt: skip
    ledger_for(cfg).insert_key(rec)
    if fmt is Format.json:
        emit([], fmt, payload={"id": rec.id, "key": key, "name": rec.name, "tags": tag_map})
    elif fmt is Format.csv:
        emit([{"id": rec.id, "key": key, "name": rec.name}], fmt)
    else:
        typer.echo(f"Created key {rec.id} ({rec.name}). Copy it now, it is not shown again:\n\n  {key}\n")


@app.command("list")
def list_(config: ConfigOption = None, fmt: FormatOption = Format.table) -> None:
    """List keys (never the keys themselves: only their first characters)."""
    cfg = load(config)
    rows = [k.public() for k in ledger_for(cfg).list_keys()]
    emit(rows, fmt, title="Keys", columns=["id", "name", "prefix", "tags", "locked_tags", "status", "created_at"])


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_…)")], config: ConfigOption = None) -> None:
    """Revoke a key: its calls get 401 (a running gateway notices within a few seconds)."""
    cfg = load(config)
    if not ledger_for(cfg).revoke_key(key_id):
        raise UsageError(f"no key with id {key_id!r} (see: tokenops keys list)")
    typer.echo(f"Revoked {key_id}.")
