"""``tokenops anomalies [--since] [--scope]``: the anomalies the gateway's watch recorded (or ``--scan``: found
now in the ledger)."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, drain, emit, ledger_for, load, where_tags, window

COLUMNS = ("bucket_start", "severity", "signal", "scope", "actual", "expected", "message")


def anomalies(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="From (inclusive): 2026-11-01, 7d, 12h. Default: 1 day ago.")] = None,
    until: Annotated[str | None, typer.Option(help="Until (exclusive), same forms. Default: now.")] = None,
    scope: Annotated[str, typer.Option("--scope", help="Only anomalies inside this scope: team=search,env=prod "
                                       "(also key=, model=, user=).")] = "",
    signal: Annotated[str | None, typer.Option(help="Only this signal: cost, tokens, requests, tokens_per_call, "
                                               "error_rate, rate_limited, latency.")] = None,
    severity: Annotated[str | None, typer.Option(help="At least this severity: low, medium, high, critical.")] = None,
    scan: Annotated[bool, typer.Option("--scan", help="Run the detector over the ledger's window now (with the "
                                       "config's anomalies settings) instead of listing what the gateway recorded; "
                                       "records nothing.")] = False,
    bucket: Annotated[int | None, typer.Option(help="--scan: seconds per bucket (default: the config's, 300); "
                                               "3600 scans weeks in seconds.")] = None,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List anomalies in spend, tokens, calls, error and 429 rates and latency per scope, and calls far above their
    feature's usual tokens: each with its severity, expected range, actual value and top contributors."""
    if ctx.invoked_subcommand is not None:
        return
    from datetime import UTC, datetime, timedelta

    from tokenops.services import anomalies as svc

    cfg = load(config)
    start, end = window(since, until)
    if start is None:
        start = (end or datetime.now(UTC)) - timedelta(days=1)
    want = where_tags(scope, "--scope") if scope else {}
    ledger = ledger_for(cfg)
    try:
        drain(cfg, ledger)
        if scan:
            rows = svc.scan(ledger, cfg.anomalies, start, end, want, signal, severity, bucket=bucket)
        else:
            rows = svc.recorded(ledger, start, end, want, signal, severity)
    finally:
        ledger.close()
    if fmt is Format.json:
        emit(rows, fmt, payload={"anomalies": rows, "count": len(rows)})
        return
    shown = [{**r, "scope": ",".join(f"{k}={v}" for k, v in (r.get("scope") or {}).items()) or "all",
              "actual": _num(r.get("actual")), "expected": _num(r.get("expected"))} for r in rows]  # fmt: skip
    emit(shown, fmt, title="Anomalies", columns=COLUMNS, whole=fmt is Format.table,
         footer=None if rows else "no anomalies in this window" + ("" if scan else
                                                                     " (--scan looks for them in the ledger now)"))  # fmt: skip


def _num(v: object) -> str:
    if not isinstance(v, int | float):
        return ""
    return f"{v:,.6g}"
