"""``tokenops recommend``: waste in the ledger's calls, with the evidence and a monthly saving in dollars."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, drain, emit, ledger_for, load, window


def recommend(
    since: Annotated[str | None, typer.Option(help="From (inclusive): 2026-11-01, 7d. Default: 30 days ago.")] = None,
    until: Annotated[str | None, typer.Option(help="Until (exclusive), same forms. Default: now.")] = None,
    by: Annotated[str, typer.Option("--by", help="Group findings by: team, feature, workload, provider, model, key "
                                    "(comma-separated).")] = "team,feature",
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Find prompt waste: repeated prefixes without prompt caching, oversized contexts, max_tokens far above use,
    frontier models on short calls, duplicate calls, background work that could go to the batch APIs."""
    from tokenops.pricing.catalog import load_catalog
    from tokenops.services.recommend import recommend as find

    cfg = load(config)
    start, end = window(since, until)
    catalog = load_catalog(tuple(e.to_row(cfg.source) for e in cfg.prices))
    ledger = ledger_for(cfg)
    try:
        drain(cfg, ledger)
        findings = find(ledger, cfg, catalog, by=[d.strip() for d in by.split(",") if d.strip()], since=start,
                        until=end)  # fmt: skip
    finally:
        ledger.close()
    rows = [f.to_json() for f in findings]
    if fmt is Format.json:
        from decimal import Decimal

        total = sum((f.monthly_usd for f in findings), Decimal(0))
        emit(rows, fmt, payload={"findings": rows, "monthly_saving_usd": format(total, "f")})
        return
    emit(rows, fmt, title="Recommendations (estimated monthly saving, USD)", whole=True,
         footer=None if rows else "nothing to recommend in this window")  # fmt: skip
