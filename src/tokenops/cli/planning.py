"""``tokenops forecast --scope``, ``tokenops plan budget``, ``tokenops report variance`` and ``tokenops report
portfolio``: forecasts, plans and variance from the ledger."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tokenops.cli.common import ConfigOption, Format, FormatOption, drain, emit, ledger_for, load, where_tags, window

plan_app = typer.Typer(help="Plan next period's budgets from the forecast.", no_args_is_help=True)


def _catalog(cfg: Any) -> Any:
    from tokenops.pricing.catalog import load_catalog

    return load_catalog(tuple(e.to_row(cfg.source) for e in cfg.prices))


def forecast_scope(scope: str, horizon: str, move: str | None, price_change: str | None, config: str | None,
                   fmt: Format) -> None:  # fmt: skip
    """The body of ``tokenops forecast --scope … --horizon …`` (see :mod:`tokenops.cli.forecast`)."""
    from tokenops.services import planning

    cfg = load(config)
    where = where_tags(scope, "--scope") if scope else {}
    days = planning.parse_horizon(horizon)
    mv = planning.parse_move(move) if move is not None else None  # --move "" is malformed, not absent
    change = planning.parse_change(price_change) if price_change is not None else None
    catalog = _catalog(cfg)
    ledger = ledger_for(cfg)
    try:
        drain(cfg, ledger)
        fc = planning.forecast_scope(ledger, cfg, catalog, where, days, move=mv, change=change)
    finally:
        ledger.close()
    if fmt is Format.json:
        emit([], fmt, payload=fc.to_json())
        return
    if fmt is Format.csv:
        emit(fc.days, fmt, columns=["date", "value", "lo", "hi"])
        return
    rows = _by_month(fc.days)
    label = ",".join(f"{k}={v}" for k, v in where.items()) or "all spend"
    footer = [f"next {days} days: ${_usd(fc.total)} ({fc.level} % interval ${_usd(fc.low)} – ${_usd(fc.high)}), "
              f"model {fc.model}, learnt from {fc.history_days} days",
              f"suggested budget with a {fc.buffer * 100:.0f} % buffer: ${_usd(fc.suggested_budget)}"]  # fmt: skip
    if fc.baseline_total is not None:
        saved = fc.baseline_total - fc.total
        footer.append(f"scenario {fc.scenario}: ${_usd(fc.total)} instead of ${_usd(fc.baseline_total)} "
                      f"({'saves' if saved >= 0 else 'costs'} ${_usd(abs(saved))})")  # fmt: skip
    for c in fc.price_changes:
        footer.append(f"known price change: {c.provider}/{c.model} from {c.effective}: ×{c.ratio:.4f} per call")
    footer += [f"note: {n}" for n in fc.notes]
    emit(rows, fmt, title=f"Forecast of {label} (USD)", columns=["period", "days", "value", "lo", "hi"],
         footer="\n".join(footer))  # fmt: skip


def _usd(v: Any) -> str:
    from decimal import Decimal

    return f"{Decimal(v).quantize(Decimal('0.01')):,}"


def _by_month(days: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Daily rows summed per month (a table of 90 days is not read): per-day bounds summed are shown as the
    month's range, which is wider than the month's own interval."""
    from decimal import Decimal

    out: dict[str, dict[str, Any]] = {}
    for d in days:
        m = out.setdefault(d["date"][:7], {"period": d["date"][:7], "days": 0, "value": Decimal(0),
                                           "lo": Decimal(0), "hi": Decimal(0)})  # fmt: skip
        m["days"] += 1
        for k in ("value", "lo", "hi"):
            m[k] += Decimal(d[k])
    return [{**m, **{k: _usd(m[k]) for k in ("value", "lo", "hi")}} for m in out.values()]


@plan_app.command("budget")
def plan_budget(
    quarter: Annotated[str, typer.Option(help="The quarter to plan: 2027-Q1.")],
    by: Annotated[str, typer.Option(help="One plan line per value of these dimensions.")] = "team,env",
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Propose next quarter's budget per team and environment: base (fixed) costs, the variable token allowance
    from the forecast, a training/fine-tuning reserve and an emergency buffer, with the assumptions."""
    from tokenops.services.planning import plan_budget as plan

    cfg = load(config)
    ledger = ledger_for(cfg)
    try:
        drain(cfg, ledger)
        result = plan(ledger, cfg, quarter, by=[b.strip() for b in by.split(",") if b.strip()])
    finally:
        ledger.close()
    rows = [line.to_json() for line in result.lines]
    if fmt is not Format.table:
        emit(rows, fmt, payload=result.to_json())
        return
    cols = [*result.lines[0].scope.keys(), "spent_usd", "fixed_usd", "variable_usd", "variable_lo_usd", "variable_hi_usd",
            "training_reserve_usd", "buffer_usd", "budget_usd"]  # fmt: skip
    emit(rows, fmt, title=f"Budget plan for {result.quarter} (USD)", columns=cols, whole=True,
         footer=f"total: ${_usd(result.total)}\nassumptions:\n" + "\n".join(f"  - {a}" for a in result.assumptions))


def variance(
    month: Annotated[str, typer.Option(help="The month to review: 2026-10.")],
    by: Annotated[str, typer.Option(help="Scopes without a budget are shown by these dimensions.")] = "team",
    timezone: Annotated[str, typer.Option(help="The month's time zone.")] = "UTC",
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Budget vs actual vs forecast per scope, the variance split into volume, model mix, tokens per call and price
    effects, and each environment's share against its target."""
    from tokenops.services.variance import variance as review

    cfg = load(config)
    ledger = ledger_for(cfg)
    try:
        drain(cfg, ledger)
        rep = review(ledger, cfg, month, by=[b.strip() for b in by.split(",") if b.strip()], timezone=timezone)
    finally:
        ledger.close()
    if fmt is Format.json:
        emit([], fmt, payload=rep.to_json())
        return
    rows = [{**r.to_json(), "scope": ",".join(f"{k}={v}" for k, v in r.scope.items())} for r in rep.rows]
    cols = ["scope", "budget", "budget_usd", "actual_usd", "forecast_usd", "previous_usd", "variance_usd", "against",
            "volume_usd", "mix_usd", "tokens_per_call_usd", "price_usd", "unpriced_requests"]  # fmt: skip
    if fmt is Format.csv:
        emit(rows, fmt, columns=cols)
        return
    status = "complete" if rep.complete else "in progress: forecast to the month's end"
    emit(rows, fmt, title=f"Variance {rep.month} ({rep.timezone}, {status})", columns=cols, whole=True)
    emit([e.to_json() for e in rep.envs], fmt, title="Environment allocation (share of the month's spend)",
         columns=["env", "cost_usd", "share", "target", "status"],
         footer="\n".join([f"total: ${_usd(rep.total_usd)}", *rep.notes]))  # fmt: skip


def portfolio(
    since: Annotated[str | None, typer.Option(help="From (inclusive): 2026-11-01, 30d. Default: 30 days ago.")] = None,
    until: Annotated[str | None, typer.Option(help="Until (exclusive). Default: now.")] = None,
    config: ConfigOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Spend and unit cost by workload class and environment, with the policies that apply to each."""
    from datetime import UTC, datetime, timedelta

    from tokenops.services.portfolio import portfolio as build

    cfg = load(config)
    start, end = window(since, until)
    start = start or (end or datetime.now(UTC)) - timedelta(days=30)
    ledger = ledger_for(cfg)
    try:
        drain(cfg, ledger)
        rows = [r.to_json() for r in build(ledger, cfg, start, end)]
    finally:
        ledger.close()
    emit(rows, fmt, title="Workload portfolio", whole=True, payload={"rows": rows} if fmt is Format.json else None,
         columns=["workload", "env", "requests", "tokens", "cost_usd", "share", "cost_per_call_usd",
                  "cost_per_mtok_usd", "unpriced_requests", "policies"])  # fmt: skip
