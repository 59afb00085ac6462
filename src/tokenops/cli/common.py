"""Options and helpers shared by the command groups."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer

from tokenops.errors import UsageError

ConfigOption = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Config file (default: $TOKENOPS_CONFIG, else ./tokenops.yaml).",
                 envvar="TOKENOPS_CONFIG", show_envvar=True),
]  # fmt: skip


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


def load(config: str | None) -> Any:
    from tokenops.config import load_config

    return load_config(config)


def ledger_for(cfg: Any) -> Any:
    """The ledger the config names (``tokenops.ledger.base.Ledger``)."""
    from tokenops.ledger import open_ledger

    return open_ledger(cfg.ledger, cfg.base_dir)


def drain(cfg: Any, ledger: Any) -> None:
    """Move what a running (or crashed) gateway left in the spool into the ledger, recording the price rows its
    events were priced with (the catalog is loaded only if one is missing from the ledger)."""
    catalog: list[Any] = []

    def price_row(row_id: str) -> Any:
        if not catalog:
            from tokenops.pricing.catalog import load_catalog

            catalog.append(load_catalog(tuple(e.to_row(cfg.source) for e in cfg.prices)))
        return catalog[0].get(row_id)

    ledger.drain(cfg.spool_path(), price_row)


def emit(rows: Sequence[dict[str, Any]], fmt: Format, *, title: str | None = None, payload: Any = None,
         columns: Sequence[str] | None = None, footer: str | None = None, whole: bool = False) -> None:  # fmt: skip
    """Print rows as a rich table, JSON (``payload`` if given, else the rows) or CSV. A table is fitted to the
    terminal, its cells cut short where need be ("1.0000…"), unless ``whole``: then it keeps every cell whole
    (exact amounts), wider than the terminal if it must be."""
    if fmt is Format.json:
        sys.stdout.write(orjson.dumps(payload if payload is not None else rows, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    cols = list(columns or (rows[0].keys() if rows else []))
    if fmt is Format.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else _cell(r.get(c)) for c in cols])
        sys.stdout.write(buf.getvalue())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for c in cols:
        numeric = bool(rows) and isinstance(rows[0].get(c), int | float) or c.endswith("_usd") or c.endswith("_mtok")
        table.add_column(c, justify="right" if numeric else "left")
    for r in rows:
        table.add_row(*["" if r.get(c) is None else _cell(r.get(c)) for c in cols])
    console = Console()
    if whole:  # a table wider than the terminal is printed whole (the terminal wraps it), no cell cut short
        natural = console.measure(table, options=console.options.update_width(1_000_000)).maximum
        if natural > console.width:
            console = Console(width=natural)
    console.print(table)
    if footer:
        console.print(footer, soft_wrap=True)  # one line: a footer is read (and grepped) whole


def _cell(v: Any) -> str:
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items())
    if isinstance(v, list | tuple):
        return ",".join(str(x) for x in v)
    return str(v)


def window(since: str | None, until: str | None) -> tuple[Any, Any]:
    """``--since`` and ``--until`` as times (either may be None); a window that ends before it starts is refused."""
    from tokenops.timespec import parse_window

    return parse_window(since, until)


def where_tags(where: str, what: str = "--where") -> dict[str, str]:
    """``--where team=search,env=prod`` (or the option ``what``) as a mapping (a malformed one is a usage error)."""
    from tokenops.tags import TagError, parse_tags

    try:
        return parse_tags(where, what=what)
    except TagError as exc:
        raise UsageError(str(exc)) from None
