"""``tokenops report spend``: who spent what, exact to the pico-dollar."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, drain, emit, ledger_for, load, where_tags, window

app = typer.Typer(help="Spend reports.", no_args_is_help=True)


@app.command("spend")
def spend(
    by: Annotated[str, typer.Option("--by", help="Group by: tag names, model, provider, key, user, day, week, "
                                    "month (comma-separated).")] = "",
    since: Annotated[str | None, typer.Option(help="From (inclusive): 2026-11-01, 2026-11-01T08:00, 7d.")] = None,
    until: Annotated[str | None, typer.Option(help="Until (exclusive), same forms as --since.")] = None,
    where: Annotated[str, typer.Option(help="Filter: team=search,env=prod")] = "",
    timezone: Annotated[str, typer.Option("--timezone", "--tz", help="Zone for day/week/month buckets.")] = "UTC",
    limit: Annotated[int | None, typer.Option(help="Show at most this many rows (biggest first).", min=1)] = None,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Spend grouped by any mix of tags and dimensions, including calls answered a moment ago."""
    from tokenops.services.reports import spend_report

    cfg = load(config)
    filters = where_tags(where)
    start, end = window(since, until)
    ledger = ledger_for(cfg)
    try:
        drain(cfg, ledger)  # calls answered a moment ago may still be in a running gateway's spool
        report = spend_report(ledger, by=by.split(",") if by else [], since=start, until=end, where=filters,
                              timezone=timezone, limit=limit)  # fmt: skip
    finally:
        ledger.close()  # a PostgreSQL ledger's pool of connections ends with the command, not at exit
    if fmt is Format.table:  # priced and unpriced calls apart; "unpriced", not 0.00, where no call had a price
        emit(report.table_rows(), fmt, title="Spend", columns=report.table_columns, footer=report.footer(),
             whole=True)  # exact amounts, never cut short  # fmt: skip
        return
    payload = report.to_json()
    emit(payload["rows"], fmt, payload=payload, columns=report.json_columns)


@app.command("savings")
def savings(
    by: Annotated[str, typer.Option("--by", help="Group by: kind (routed, fallback, downgrade, cache_hit), model, "
                                    "key, user, or tag names (comma-separated).")] = "kind",
    since: Annotated[str | None, typer.Option(help="From (inclusive): 2026-11-01, 2026-11-01T08:00, 7d.")] = None,
    until: Annotated[str | None, typer.Option(help="Until (exclusive), same forms as --since.")] = None,
    where: Annotated[str, typer.Option(help="Filter: team=search,env=prod")] = "",
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """What routing, fallbacks, budget downgrades and the response cache saved: each such call's cost against
    the same usage priced at the model its client asked for."""
    from tokenops.pricing.catalog import load_catalog
    from tokenops.services.savings import savings_report

    cfg = load(config)
    filters = where_tags(where)
    start, end = window(since, until)
    catalog = load_catalog(tuple(e.to_row(cfg.source) for e in cfg.prices))
    ledger = ledger_for(cfg)
    try:
        drain(cfg, ledger)
        report = savings_report(ledger, cfg, catalog, by=[d.strip() for d in by.split(",") if d.strip()],
                                since=start, until=end, where=filters)  # fmt: skip
    finally:
        ledger.close()
    payload = report.to_json()
    if fmt is Format.json:
        emit(payload["rows"], fmt, payload=payload)
        return
    total = payload["total"]
    rows = payload["rows"] + ([{**{d: "total" if i == 0 else "" for i, d in enumerate(report.by)},
                                **{k: v for k, v in total.items()}}] if payload["rows"] else [])  # fmt: skip
    emit(rows, fmt, title="Savings (USD): paid vs the model asked for", whole=True)
