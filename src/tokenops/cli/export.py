"""``tokenops export focus``: the ledger's spend as a FOCUS 1.2 dataset for FinOps tools."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, drain, emit, ledger_for, load
from tokenops.money import format_usd

app = typer.Typer(help="Take the ledger's data out in standard formats.", no_args_is_help=True)


class Granularity(StrEnum):
    day = "day"
    hour = "hour"


@app.command("focus")
def focus(
    output: Annotated[Path, typer.Option("-o", "--output", help="The file to write: .csv or .parquet (its schema "
                                         "goes beside it, as FILE.metadata.json).", show_default=False)],  # fmt: skip
    since: Annotated[str | None, typer.Option(help="From (inclusive): 2026-11-01, 2026-11-01T08:00, 30d.")] = None,
    until: Annotated[str | None, typer.Option(help="Until (exclusive), same forms as --since.")] = None,
    month: Annotated[str | None, typer.Option(help="A calendar month (UTC), as a bill: 2026-11.")] = None,
    granularity: Annotated[Granularity, typer.Option(help="One charge per day or per hour (UTC).")] = Granularity.day,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Write the calls of a window as a FOCUS 1.2 dataset (FinOps Open Cost and Usage Specification): one row
    per day (or hour), provider, model, key, tag set and kind of token, with its list price and what the
    ledger billed. Unpriced calls are counted and named, never exported at $0."""
    from tokenops.services.focus import Catalogs, FocusExport, focus_rows, month_or_window, write_focus
    from tokenops.services.reports import spend_report

    cfg = load(config)
    start, end = month_or_window(month, since, until)
    ledger = ledger_for(cfg)
    catalogs = Catalogs(tuple(e.to_row(cfg.source) for e in cfg.prices))
    export = FocusExport(start, end, granularity.value)
    replaced = output.exists()
    try:
        drain(cfg, ledger)  # calls answered a moment ago may still be in a running gateway's spool
        rows = focus_rows(ledger, export, providers=cfg.providers, catalog_row=catalogs.row,
                          public_row=catalogs.public)  # fmt: skip
        meta = write_focus(export, output, rows)  # streamed: a month of charges is never all in memory
        spent = spend_report(ledger, by=[], since=export.since, until=export.until).total_cost_usd  # its own sum
    finally:
        ledger.close()
    summary = export.to_json()
    summary.update(file=str(output), metadata=str(meta), ledger_spend_usd=format_usd(spent))
    if fmt is not Format.table:
        emit([summary], fmt, payload=summary)
    else:
        typer.echo(f"Wrote {export.row_count} FOCUS {summary['focus_version']} rows ({export.calls} calls, "
                   f"BilledCost ${summary['billed_cost_usd']}) to {output}{' (replaced)' if replaced else ''}; "
                   f"schema in {meta}.")  # fmt: skip
        if export.billed == spent:
            typer.echo(f"BilledCost adds up to the ledger's spend report for the window (${format_usd(spent)}), "
                       "to the pico-dollar.")  # fmt: skip
    if export.billed != spent:  # cannot happen unless a charge was left out: said loudly
        typer.echo(f"BilledCost ${export.billed} differs from the ledger's spend report for the window "
                   f"(${spent}): please report this.", err=True)  # fmt: skip
    if not export.row_count:
        typer.echo("No priced call in the window: the file holds the header only (FOCUS validators refuse an empty "
                   "dataset).", err=True)  # fmt: skip
    if export.unpriced_calls:
        models = ", ".join(summary["unpriced_models"][:5]) + (" …" if len(summary["unpriced_models"]) > 5 else "")
        typer.echo(f"Not exported: {export.unpriced_calls} unpriced calls ({export.unpriced_tokens} tokens) of "
                   f"{models}: they were recorded without a price, and a FOCUS charge needs one. Give those models a "
                   "price (`prices:` in the config; `tokenops prices list --unpriced` lists them) so that their next "
                   "calls are priced.", err=True)  # fmt: skip
    if export.derived_charges:
        typer.echo(f"{export.derived_charges} charges had no usable price row (not in the ledger, or tiers it was "
                   "not split by): each is one line, its unit price its recorded cost over its tokens.",
                   err=True)  # fmt: skip
    if export.repriced_mismatch:
        typer.echo(f"{export.repriced_mismatch} charges cost more or less in the ledger than their price row gives "
                   "for their usage: BilledCost keeps the ledger's figure, ListCost the row's.", err=True)  # fmt: skip
