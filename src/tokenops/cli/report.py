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
    emit(rows, fmt, title="Savings (USD): paid vs the model asked for", whole=True,
         columns=[*report.by, "calls", "unpriced", "paid_usd", "counterfactual_usd", "saved_usd"],
         footer=None if rows else "no routed, fallback, downgraded or cache-hit calls in this window")  # fmt: skip


@app.command("units")
def units(
    metric: Annotated[str, typer.Option("--metric", help="The business metric (as imported with `tokenops import "
                                        "metrics`), e.g. tickets_resolved.", show_default=False)],
    scope: Annotated[str, typer.Option(help="Tags of the spend and of the metric rows: feature=support-bot")] = "",
    since: Annotated[str | None, typer.Option(help="From the start of this day: 2026-10-01, 30d.")] = None,
    until: Annotated[str | None, typer.Option(help="Until (exclusive) this day's start, same forms as --since.")] = None,
    by: Annotated[str, typer.Option("--by", help="Period: day, week or month.")] = "day",
    value_per_unit: Annotated[str | None, typer.Option("--value-per-unit", help="What one unit is worth in USD "
                                                       "(adds value and ROI).")] = None,
    timezone: Annotated[str, typer.Option("--timezone", "--tz", help="Zone of the days and periods.")] = "UTC",
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Unit economics: spend, units, cost per unit (and ROI) per period, with the trend of the cost per unit."""
    from tokenops.errors import UsageError
    from tokenops.money import usd_setting
    from tokenops.services.units import units_report
    from tokenops.tags import TagError, parse_tags

    cfg = load(config)
    try:
        filters = parse_tags(scope, what="--scope")
    except TagError as exc:
        raise UsageError(str(exc)) from None
    start, end = window(since, until)
    worth = None
    if value_per_unit is not None:
        try:
            worth = usd_setting(value_per_unit.strip(), what="--value-per-unit", allow_zero=True)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    ledger = ledger_for(cfg)
    try:
        drain(cfg, ledger)
        report = units_report(ledger, metric=metric, scope=filters, by=by, since=start, until=end, timezone=timezone,
                              value_per_unit=worth)  # fmt: skip
    finally:
        ledger.close()
    if fmt is Format.json:
        payload = report.to_json()
        emit(payload["periods"], fmt, payload=payload)
        return
    rows = [report.row(p) for p in report.periods]
    if fmt is Format.csv:
        emit(rows, fmt, columns=report.columns)
        return
    rows += [report.row(report.total)] if rows else []
    emit(rows, fmt, title=f"Cost per unit of {report.metric} (USD)", columns=report.columns, footer=report.footer(),
         whole=True)  # fmt: skip


@app.command("chargeback")
def chargeback(
    month: Annotated[str, typer.Option("--month", help="Calendar month: 2026-10.", show_default=False)],
    timezone: Annotated[str, typer.Option("--timezone", "--tz", help="Zone the month is a calendar month of.")] = "UTC",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to this file instead of the "
                                               "terminal.")] = None,
    config: ConfigOption = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: table, json, csv or html (a printable "
                                     "statement per cost centre).")] = "table",
) -> None:
    """Showback / chargeback: a statement per cost centre (direct spend, shares of shared and untagged spend)
    that add up to the month's bill to the cent (`chargeback:` in the config says how)."""
    import contextlib
    import sys

    import orjson

    from tokenops.errors import UsageError
    from tokenops.services.chargeback import TABLE_COLUMNS, chargeback_report

    if fmt not in ("table", "json", "csv", "html"):
        raise UsageError(f"--format: {fmt!r} is not table, json, csv or html")
    cfg = load(config)
    ledger = ledger_for(cfg)
    try:
        drain(cfg, ledger)
        report = chargeback_report(ledger, cfg, month, timezone)
    finally:
        ledger.close()
    with contextlib.ExitStack() as stack:
        try:
            out = stack.enter_context(open(output, "w", encoding="utf-8")) if output else sys.stdout
        except OSError as exc:
            raise UsageError(f"--output {output}: cannot write ({exc.strerror or exc})") from None
        stack.enter_context(contextlib.redirect_stdout(out))
        if fmt == "json":
            out.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
        elif fmt == "html":
            out.write(report.html() + "\n")
        elif report.no_data:
            typer.echo(report.message)
        elif fmt == "csv":
            out.write(report.csv())
        else:
            for s in report.allocation.statements:
                emit(report.table_rows(s), Format.table, title=f"{s.cost_centre}: statement {report.month} (USD)",
                     columns=TABLE_COLUMNS, footer=f"total {s.cost_centre}: ${s.total} (calls: {s.requests}, "
                     f"unpriced: {s.unpriced})", whole=True)  # fmt: skip
            summary = [{"cost_centre": s.cost_centre, "requests": s.requests, "unpriced": s.unpriced,
                        "amount_usd": format(s.total, "f")} for s in report.allocation.statements]  # fmt: skip
            summary.append({"cost_centre": "sum of statements", "amount_usd": format(report.allocation.statements_total, "f")})
            pools = report.to_json()["pools"]
            if pools:
                emit([{**p, "shares": ", ".join(f"{c}: {v}" for c, v in p["shares"].items()) or "kept apart"}
                      for p in pools], Format.table, title="Pools spread over the cost centres", whole=True)  # fmt: skip
            emit(summary, Format.table, title=f"Chargeback {report.month} ({report.timezone})", footer=report.footer(),
                 whole=True)  # fmt: skip
    if output:
        typer.echo(f"wrote {output}", err=True)
