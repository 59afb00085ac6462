"""``tokenops report variance --month 2026-10``: budget vs actual vs forecast per scope, each dollar of variance
with its reason, and each environment's share of the total against its target.

For every budget with a money amount (config and API), the month's budget is its amount scaled to the month (a
daily budget × the month's days, a weekly one × days/7, a quarterly one / 3; custom periods are prorated by
overlap). Actual is the scope's spend in the month (in the report's time zone); for the current month the
forecast adds the forecast of the days left (:mod:`tokenops.analytics.forecast` on the scope's daily spend),
otherwise it equals the actual. The variance (forecast − budget) is split into volume, model mix, tokens per call
and price effects (:mod:`tokenops.analytics.variance`) against the plan the budget implies: last month's calls,
models and tokens per call, scaled to the budget's amount. So "volume +$120" reads: $120 more than budgeted
because of more calls at last month's cost per call. Without last month's data the whole variance is volume.

Scopes without a budget are shown by the ``--by`` dimensions (default team) against last month instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tokenops.analytics.variance import Effects, MixRow, decompose
from tokenops.config import Config
from tokenops.errors import UsageError
from tokenops.ledger.base import Ledger
from tokenops.ledger.reports import TIME_DIMENSIONS, ReportQuery
from tokenops.money import ZERO, format_usd
from tokenops.policy.config import BudgetConfig
from tokenops.policy.definitions import Definitions
from tokenops.services.chargeback import month_window as calendar_month


def month_window(month: str, tz: str) -> tuple[datetime, datetime]:
    """``2026-10`` in ``tz`` as [first instant, first instant of the next month), in UTC."""
    start, end = calendar_month(month, tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def check_scopes(by: Sequence[str]) -> None:
    """``--by`` of a plan or a variance review names scopes: a time bucket (day, week, month) is not one."""
    for b in by:
        if b.strip() in TIME_DIMENSIONS:
            raise UsageError(f"--by {b.strip()}: lines are scopes (team, env, model, …), not time buckets")


def budget_window(b: BudgetConfig, start: datetime, end: datetime, tz: str) -> tuple[Decimal, datetime, datetime] | None:
    """The budget's money for the month [start, end) (in ``tz``) and the part of the month it covers: all of it
    for a periodic budget (a daily one × the month's calendar days, weekly × days/7, quarterly / 3), the overlap for
    a custom one (its amount prorated by time); None when it has no money amount or does not touch the month."""
    if b.amount_usd is None:
        return None
    zone = ZoneInfo(tz)
    days = Decimal((end.astimezone(zone).date() - start.astimezone(zone).date()).days)
    if b.period == "month":
        return b.amount_usd, start, end
    if b.period == "day":
        return b.amount_usd * days, start, end
    if b.period == "week":
        return b.amount_usd * days / 7, start, end
    if b.period == "quarter":
        return b.amount_usd / 3, start, end
    window = b.custom_window()
    if window is None or window[1] <= window[0]:
        return None
    lo, hi = max(start, window[0]), min(end, window[1])
    if hi <= lo:
        return None
    share = Decimal((hi - lo).total_seconds()) / Decimal((window[1] - window[0]).total_seconds())
    return b.amount_usd * share, lo, hi


def scope_where(b: BudgetConfig) -> dict[str, str] | None:
    """The budget's scope as report filters; None when it cannot be one (a model pattern)."""
    out = {}
    for name, value in b.scope.conditions:
        if name == "model" and any(ch in value for ch in "*?["):
            return None
        out[name] = value
    return out


@dataclass
class VarianceRow:
    scope: dict[str, str]
    budget: str | None
    budget_usd: Decimal | None
    actual_usd: Decimal
    forecast_usd: Decimal
    previous_usd: Decimal
    effects: Effects | None
    unpriced: int = 0
    note: str = ""

    @property
    def variance_usd(self) -> Decimal:
        base = self.budget_usd if self.budget_usd is not None else self.previous_usd
        return self.forecast_usd - base

    def to_json(self) -> dict[str, Any]:
        e = self.effects
        return {
            "scope": self.scope, "budget": self.budget,
            "budget_usd": None if self.budget_usd is None else format_usd(self.budget_usd),
            "actual_usd": format_usd(self.actual_usd), "forecast_usd": format_usd(self.forecast_usd),
            "previous_usd": format_usd(self.previous_usd), "variance_usd": format_usd(self.variance_usd),
            "against": "budget" if self.budget_usd is not None else "previous month",
            "volume_usd": None if e is None else format_usd(e.volume),
            "mix_usd": None if e is None else format_usd(e.mix),
            "tokens_per_call_usd": None if e is None else format_usd(e.tokens_per_call),
            "price_usd": None if e is None else format_usd(e.price),
            "unpriced_requests": self.unpriced, "note": self.note,
        }  # fmt: skip


@dataclass
class EnvShare:
    env: str
    cost_usd: Decimal
    share: Decimal
    target: tuple[Decimal, Decimal] | None

    @property
    def status(self) -> str:
        if self.target is None:
            return "no target"
        low, high = self.target
        return "below target" if self.share < low else "above target" if self.share > high else "on target"

    def to_json(self) -> dict[str, Any]:
        return {"env": self.env, "cost_usd": format_usd(self.cost_usd), "share": f"{self.share:.4f}",
                "target": None if self.target is None else [f"{t:.2f}" for t in self.target],
                "status": self.status}  # fmt: skip


@dataclass
class VarianceReport:
    month: str
    timezone: str
    complete: bool  # the month has ended
    rows: list[VarianceRow] = field(default_factory=list)
    envs: list[EnvShare] = field(default_factory=list)
    total_usd: Decimal = ZERO
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"month": self.month, "timezone": self.timezone, "complete": self.complete,
                "total_usd": format_usd(self.total_usd), "rows": [r.to_json() for r in self.rows],
                "environments": [e.to_json() for e in self.envs], "notes": self.notes}  # fmt: skip


def _mix(ledger: Ledger, where: dict[str, str], start: datetime, end: datetime) -> tuple[list[MixRow], int]:
    """The priced calls per model: a model with some unpriced calls counts its priced share of the tokens (the
    ledger sums tokens over all its calls), so that its tokens per call stay what they were."""
    rep = ledger.spend_report(ReportQuery.build(by=["model"], since=start, until=end, where=where))
    rows = [MixRow(r.keys["model"], r.priced_requests,
                   (r.input_tokens + r.output_tokens) * r.priced_requests // r.requests, r.cost_usd)
            for r in rep.rows if r.priced_requests]  # fmt: skip
    return rows, rep.unpriced_requests


def _daily(ledger: Ledger, where: dict[str, str], start: datetime, end: datetime, tz: str) -> dict[date, Decimal]:
    rep = ledger.spend_report(ReportQuery.build(by=["day"], since=start, until=end, where=where, timezone=tz))
    return {date.fromisoformat(r.keys["day"]): r.cost_usd for r in rep.rows}


def month_end_forecast(ledger: Ledger, where: dict[str, str], start: datetime, end: datetime, now: datetime,
                       tz: str) -> tuple[Decimal, str]:  # fmt: skip
    """Spend from ``now`` to ``end``: the forecast of the scope's daily spend over the days left (history: the
    56 days before now), else the mean of the last 7 days. With the method used."""
    if now >= end:
        return ZERO, ""
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    hist_start = datetime.combine(today - timedelta(days=56), datetime.min.time(), zone).astimezone(UTC)
    today_start = datetime.combine(today, datetime.min.time(), zone).astimezone(UTC)
    daily = _daily(ledger, where, hist_start, today_start, tz)
    days_left = (end.astimezone(zone).date() - today).days  # today counts as left: its spend so far is actual
    if not daily or days_left <= 0:
        return ZERO, "no history to forecast from"
    first = min(daily)
    dates = [first + timedelta(days=i) for i in range((today - first).days)]
    values = [float(daily.get(d, ZERO)) for d in dates]
    so_far = ledger.spend_report(ReportQuery.build(by=[], since=today_start, until=now, where=where)).total_cost_usd
    try:
        from tokenops.analytics.forecast import forecast

        fc = forecast([datetime.combine(d, datetime.min.time()) for d in dates], values, days_left)
        total = sum(Decimal(repr(p.value)) for p in fc.points)
        method = f"forecast ({fc.model})"
    except UsageError:  # a history the models cannot use: the last week's mean
        recent = values[-7:]
        total = Decimal(repr(sum(recent) / len(recent))) * days_left
        method = "mean of the last 7 days"
    return max(total - so_far, ZERO).quantize(Decimal("0.000001")), method


def variance(ledger: Ledger, config: Config, month: str, *, by: Sequence[str] = ("team",), timezone: str = "UTC",
             now: datetime | None = None) -> VarianceReport:  # fmt: skip
    now = now or datetime.now(UTC)
    start, end = month_window(month, timezone)
    check_scopes(by)
    if start > now:
        raise UsageError(f"--month {month} has not started yet")
    prev_end = start
    try:
        prev_start, _ = month_window((start.astimezone(ZoneInfo(timezone)) - timedelta(days=1)).strftime("%Y-%m"),
                                     timezone)  # fmt: skip
    except (OverflowError, UsageError):  # the year 1: no month before it
        prev_start = prev_end
    report = VarianceReport(month, timezone, complete=now >= end)
    total = ledger.spend_report(ReportQuery.build(by=[], since=start, until=min(end, now)))
    report.total_usd = total.total_cost_usd
    if total.requests == 0:
        raise UsageError(f"no data for {month}: the ledger has no calls in that month ({timezone})")
    notes: set[str] = set()

    def row(where: dict[str, str], budget: BudgetConfig | None, amount: Decimal | None = None,
            lo: datetime = start, hi: datetime = end) -> VarianceRow:  # fmt: skip
        """One scope over [lo, hi): the month, or the part a custom budget covers."""
        actual_rows, unpriced = _mix(ledger, where, lo, min(hi, now))
        prev_rows, _ = _mix(ledger, where, prev_start, prev_end)
        actual = sum((r.cost_usd for r in actual_rows), ZERO)
        previous = sum((r.cost_usd for r in prev_rows), ZERO)
        rest, method = month_end_forecast(ledger, where, lo, hi, now, timezone)
        if method:
            notes.add(f"forecast of the days left: {method}")
        fc = actual + rest
        effects = None
        if amount is not None:
            if previous > 0:
                effects = decompose(prev_rows, actual_rows, base_scale=amount / previous)
            base_total = amount
        else:
            effects = decompose(prev_rows, actual_rows) if prev_rows else None
            base_total = previous
        if effects is not None and fc != actual:  # the days left: more calls at today's mix (volume)
            extra = fc - actual
            effects = Effects(base_total, fc, effects.volume + extra, effects.mix, effects.tokens_per_call,
                              effects.price)  # fmt: skip
        note = ""
        if effects is None and amount is not None:
            note = "no spend last month: the variance is all volume"
            effects = Effects(amount, fc, fc - amount, ZERO, ZERO, ZERO)
        return VarianceRow(where, budget.name if budget else None, amount, actual, fc, previous, effects, unpriced,
                           note)  # fmt: skip

    budgets = [b for b, _ in Definitions.of(ledger, config).all("budget") if b.amount_usd is not None]
    for b in budgets:
        where = scope_where(b)
        if where is None:
            notes.add(f"budget {b.name}: a scope with a model pattern cannot be split by effects; left out")
            continue
        covers = budget_window(b, start, end, timezone)
        if covers is None:
            notes.add(f"budget {b.name}: its custom period does not touch {month}; left out")
            continue
        amount, lo, hi = covers
        if (lo, hi) != (start, end):
            notes.add(f"budget {b.name}: compared over the part of the month it covers, {lo:%Y-%m-%d %H:%M} to "
                      f"{hi:%Y-%m-%d %H:%M} UTC")  # fmt: skip
        report.rows.append(row(where, b, amount, lo, hi))
    covered = {tuple(sorted(r.scope.items())) for r in report.rows}
    if by:
        rep = ledger.spend_report(ReportQuery.build(by=list(by), since=start, until=min(end, now)))
        for r in rep.rows:
            where = dict(r.keys)
            if tuple(sorted(where.items())) not in covered:
                report.rows.append(row(where, None))
    envs = ledger.spend_report(ReportQuery.build(by=["env"], since=start, until=min(end, now)))
    for e in envs.rows:
        share = e.cost_usd / report.total_usd if report.total_usd else ZERO
        report.envs.append(EnvShare(e.keys["env"], e.cost_usd, share, config.planning.env_targets.get(e.keys["env"])))
    report.notes = sorted(notes)
    return report
