"""``tokenops ledger migrate``: apply the schema to a database, or move a whole ledger to another one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenops.errors import UsageError

app = typer.Typer(help="Ledger administration: schema migrations, moving a ledger between databases.",
                  no_args_is_help=True)  # fmt: skip

SCHEMES = ("duckdb://", "postgresql://", "postgres://")


@app.command("migrate")
def migrate(
    to: Annotated[str, typer.Option("--to", help="The ledger to write: duckdb:///path/file.duckdb or "
                                    "postgresql://user@host:port/db.")],  # fmt: skip
    from_: Annotated[str | None, typer.Option("--from", help="The ledger to copy from. Without it, only the "
                                              "schema migrations are applied to --to.")] = None,  # fmt: skip
    batch: Annotated[int, typer.Option(help="Rows per batch.", min=100, max=1_000_000)] = 10_000,
) -> None:
    """Apply the schema to --to (run it as a user who may create tables), or copy everything from --from into
    --to: events, price rows, keys, budgets, limits and rules, approvals and alerts. A re-run copies nothing
    twice. The copy is verified at the end (rows per table, total cost, total tokens): exit 2 if it differs."""
    from tokenops.ledger import open_ledger

    dest_id = _identity(to, "--to")
    if from_ is None:
        dest = open_ledger(to)
        try:
            applied = dest.migrate()
        finally:
            dest.close()
        typer.echo(f"{_shown(to)}: schema up to date" + (f" (applied {', '.join(applied)})" if applied else ""))
        return
    if _identity(from_, "--from") == dest_id:
        raise UsageError("--from and --to name the same ledger")
    if from_.startswith("duckdb://") and not _duckdb_file(from_).exists():
        raise UsageError(f"--from: no ledger file at {_duckdb_file(from_)}")
    source, dest = open_ledger(from_), open_ledger(to)
    try:
        _copy(source, dest, from_, to, batch)
    finally:
        source.close()
        dest.close()


def _copy(source: Any, dest: Any, from_: str, to: str, batch: int) -> None:
    from tokenops.ledger.transfer import copy_ledger, verify

    dest.migrate()
    before = source.totals()
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=False) as bar:  # fmt: skip
            tasks = {t: bar.add_task(t, total=n) for t, n in before.rows.items() if n}  # empty tables: no bar

            def advance(table: str, read: int, new: int) -> None:
                if table in tasks:
                    bar.advance(tasks[table], read)

            copied = copy_ledger(source, dest, batch=batch, progress=advance)
    else:
        copied = copy_ledger(source, dest, batch=batch)
    summary = ", ".join(f"{copied.new[t]} {t}" for t in copied.new)
    typer.echo(f"copied {summary} from {_shown(from_)} to {_shown(to)}")
    problems = verify(source, dest)
    if problems:
        typer.secho(f"error: the copy differs from the source (source vs destination): {'; '.join(problems)}",
                    err=True, fg="red")  # fmt: skip
        raise typer.Exit(2)
    totals = dest.totals()
    tokens = sum(totals.tokens[c] for c in ("input_tokens", "output_tokens"))
    typer.echo(f"verified: {totals.rows['events']} events, ${totals.cost_usd:f} and {tokens} tokens in both ledgers")


def _identity(url: str, option: str) -> str:
    """What makes two URLs the same ledger (a file's resolved path; a server's host, port and database)."""
    if not url.startswith(SCHEMES):
        raise UsageError(f"{option}: unknown ledger URL {_shown(url)!r}: expected duckdb:///path/to/file.duckdb or "
                         "postgresql://user@host:port/db")  # fmt: skip
    if url.startswith("duckdb://"):
        return f"duckdb:{_duckdb_file(url).resolve()}"
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port or 5432
    except ValueError:
        raise UsageError(f"{option}: invalid port in {_shown(url)}") from None
    return f"postgresql://{parts.hostname or 'localhost'}:{port}{parts.path or '/'}"


def _duckdb_file(url: str) -> Path:
    from tokenops.ledger import duckdb_path

    return duckdb_path(url)


def _shown(url: str) -> str:
    from tokenops.ledger.postgres import safe_url

    return url if url.startswith("duckdb://") else safe_url(url)
