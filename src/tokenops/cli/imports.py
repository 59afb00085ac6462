"""``tokenops import``: outside data brought into the ledger (business metrics, for unit costs)."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, emit, ledger_for, load

app = typer.Typer(help="Bring outside data into the ledger.", no_args_is_help=True)


@app.command("metrics")
def metrics(
    file: Annotated[str, typer.Argument(help="CSV with a header: date,metric,value then tag columns "
                                        "(team,feature,customer…).", show_default=False)],
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Import business counts (tickets resolved, summaries written…) for unit costs: `tokenops report units`.
    The whole file is checked first (an error writes nothing); a date, metric and tags imported again replaces
    its value."""
    from tokenops.services.units import import_metrics

    cfg = load(config)
    ledger = ledger_for(cfg)
    try:
        done = import_metrics(ledger, file)
    finally:
        ledger.close()
    if fmt is Format.table:
        typer.echo(done.summary())
        return
    payload = done.to_json()
    emit([payload], fmt, payload=payload)
