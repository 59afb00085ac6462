"""Forecasts of the ledger's spend per scope, what-if scenarios, and next period's budget plan.

``tokenops forecast --scope team=search --horizon 90d``: the scope's daily spend (every day since its first call,
up to a year, days without calls counted as $0) is forecast with :func:`tokenops.analytics.forecast.forecast`
(model chosen and interval calibrated by backtest). Known future price changes are applied: for each model the
scope used in the last 28 days, its mean call is priced with the catalog row in force on each future day and
with today's; the day's forecast is scaled by the cost-weighted ratio. A what-if scenario scales the same way:
``move`` sends a share of one model's calls to another (priced as the same calls at the other model's price),
``price_change`` applies a relative change to every price. The suggested budget is the forecast total plus the
planning buffer (25 % by default).

``tokenops plan budget --quarter 2027-Q1``: per team and environment, the quarter's base (fixed) costs (events
from the fixed sources, e.g. imported cloud bills, at their last full month's level), the variable token
allowance (the forecast of the rest over the quarter's days), a training/fine-tuning reserve (the larger of a
share of the variable allowance and the forecast of ``workload=training`` spend) and an emergency buffer on
the variable part; every assumption is printed with the plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenops.config import Config
from tokenops.errors import UsageError
from tokenops.ledger.base import USAGE_ROW_COLUMNS, Ledger
from tokenops.ledger.reports import ReportQuery
from tokenops.money import ZERO, format_usd
from tokenops.pricing.catalog import PriceCatalog
from tokenops.pricing.model import PriceRow, price_usage
from tokenops.services.variance import check_scopes
from tokenops.usage import Usage

MAX_HISTORY_DAYS = 365
MAX_PLAN_DAYS = 731  # the longest forecast a plan makes (as --horizon's two years)
MIX_DAYS = 28  # the window whose calls stand for "the scope's calls" when prices change
CENT = Decimal("0.01")


def _d(x: float) -> Decimal:
    return Decimal(repr(round(x, 6)))


def parse_horizon(text: str) -> int:
    """``90d``, ``12w``, ``3m`` (30-day months), ``1q`` (91 days) or a number of days."""
    m = re.fullmatch(r"\s*(\d{1,4})\s*([dwmq]?)\s*", text or "")
    if not m:
        raise UsageError(f"--horizon: {text!r} is not a horizon like 90d, 12w, 3m or 1q")
    n = int(m.group(1)) * {"": 1, "d": 1, "w": 7, "m": 30, "q": 91}[m.group(2)]
    if not 1 <= n <= 731:
        raise UsageError(f"--horizon: {text!r} must be 1 day to 2 years")
    return n


@dataclass(frozen=True)
class Move:
    share: Decimal  # of the source model's calls
    source: str
    target: str


def parse_move(text: str) -> Move:
    """``30%:gpt-4o=gpt-4o-mini``: move 30 % of gpt-4o's calls to gpt-4o-mini."""
    m = re.fullmatch(r"\s*(\d{1,3}(?:\.\d+)?)%\s*:\s*([^=\s]+)\s*=\s*([^=\s]+)\s*", text or "")
    if not m or not 0 < Decimal(m.group(1)) <= 100:
        raise UsageError(f"--move: {text!r} is not SHARE%:FROM=TO, e.g. 30%:gpt-4o=gpt-4o-mini")
    return Move(Decimal(m.group(1)) / 100, m.group(2), m.group(3))


def parse_change(text: str) -> Decimal:
    """``+10%`` or ``-25%``: a relative price change."""
    m = re.fullmatch(r"\s*([+-]?\d{1,3}(?:\.\d+)?)%\s*", text or "")
    if not m or Decimal(m.group(1)) <= -100:
        raise UsageError(f"--price-change: {text!r} is not a change like +10% or -25%")
    return Decimal(m.group(1)) / 100


@dataclass
class _ModelMix:
    provider: str
    model: str
    calls: int = 0
    input: int = 0
    cache_read: int = 0
    output: int = 0
    cost: Decimal = ZERO

    def mean_call(self) -> Usage:
        n = max(self.calls, 1)
        return Usage(input_tokens=round(self.input / n), cache_read_tokens=round(self.cache_read / n),
                     output_tokens=round(self.output / n))  # fmt: skip


def _mix(ledger: Ledger, where: Mapping[str, str], end: datetime) -> list[_ModelMix]:
    """The scope's priced calls of the last MIX_DAYS days per (provider, model): from the calls themselves (cached
    input apart) when the scope's words are among their columns, else from the spend report (any tag)."""
    idx = {c: i for i, c in enumerate(USAGE_ROW_COLUMNS)}
    if any({"model": "model_used", "key": "key_id"}.get(k, k) not in idx for k in where):
        rep = ledger.spend_report(ReportQuery.build(by=["provider", "model"], since=end - timedelta(days=MIX_DAYS),
                                                    until=end, where=dict(where)))  # fmt: skip
        mixes = []
        for row in rep.rows:
            if not row.priced_requests:
                continue
            share = Decimal(row.priced_requests) / row.requests  # the tokens of the priced calls, pro rata
            mixes.append(_ModelMix(row.keys["provider"], row.keys["model"], row.priced_requests,
                                   int(row.input_tokens * share), 0, int(row.output_tokens * share), row.cost_usd))  # fmt: skip
        return sorted(mixes, key=lambda m: -m.cost)
    out: dict[tuple[str, str], _ModelMix] = {}
    for r in ledger.usage_rows(end - timedelta(days=MIX_DAYS), end):
        if r[idx["cost_usd"]] is None:
            continue
        if any(_value(r, idx, k) != v for k, v in where.items()):
            continue
        key = (r[idx["provider"]], r[idx["model_used"]])
        m = out.setdefault(key, _ModelMix(*key))
        m.calls += 1
        m.input += int(r[idx["input_tokens"]] or 0)
        m.cache_read += int(r[idx["cache_read_tokens"]] or 0)
        m.output += int(r[idx["output_tokens"]] or 0)
        m.cost += Decimal(r[idx["cost_usd"]])
    return sorted(out.values(), key=lambda m: -m.cost)


def _value(r: Sequence[Any], idx: Mapping[str, int], name: str) -> Any:
    column = {"model": "model_used", "key": "key_id"}.get(name, name)
    if column not in idx:
        raise UsageError(f"a what-if or price-change forecast can filter by {', '.join(SCOPE_WORDS)}, not {name!r}")
    return r[idx[column]]


SCOPE_WORDS = ("team", "feature", "workload", "provider", "model", "key")


def _cost(row: PriceRow | None, usage: Usage) -> Decimal | None:
    return None if row is None else price_usage(usage, row).total


@dataclass(frozen=True)
class PriceChange:
    provider: str
    model: str
    effective: date
    ratio: Decimal  # the model's mean call at the new price / at today's

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "effective_from": self.effective.isoformat(),
                "ratio": f"{self.ratio:.4f}"}  # fmt: skip


def day_factors(mix: Sequence[_ModelMix], catalog: PriceCatalog, days: Sequence[date], today: datetime,
                move: Move | None, change: Decimal | None) -> tuple[list[Decimal], list[PriceChange]]:  # fmt: skip
    """For each future day, the factor its forecast is multiplied by: known price changes, then the scenario."""
    total = sum((m.cost for m in mix), ZERO)
    changes: list[PriceChange] = []
    if not mix or total == 0:
        return [Decimal(1) + (change or ZERO)] * len(days), changes
    now_cost = {(m.provider, m.model): _cost(catalog.lookup((m.provider,), m.model, today), m.mean_call())
                for m in mix}  # fmt: skip
    factors = []
    seen: dict[tuple[str, str], Decimal] = {}
    for d in days:
        at = datetime(d.year, d.month, d.day, 12, tzinfo=UTC)
        f = ZERO
        for m in mix:
            weight = m.cost / total
            base = now_cost[(m.provider, m.model)]
            ratio = Decimal(1)
            if base:
                then = _cost(catalog.lookup((m.provider,), m.model, at), m.mean_call())
                if then is not None:
                    ratio = then / base
            if ratio != seen.get((m.provider, m.model), Decimal(1)):
                seen[(m.provider, m.model)] = ratio
                changes.append(PriceChange(m.provider, m.model, d, ratio))
            if move is not None and m.model == move.source and base:
                target = catalog.lookup((m.provider,), move.target, at) or _any_provider(catalog, move.target, at)
                moved = _cost(target, m.mean_call())
                if moved is None:
                    raise UsageError(f"--move: no price for {move.target} to move calls to")
                ratio = ratio * (1 - move.share) + move.share * moved / base
            f += weight * ratio
        factors.append(f * (Decimal(1) + (change or ZERO)))
    if move is not None and not any(m.model == move.source for m in mix):
        raise UsageError(f"--move: the scope made no priced calls to {move.source} in the last {MIX_DAYS} days")
    return factors, changes


def _any_provider(catalog: PriceCatalog, model: str, at: datetime) -> PriceRow | None:
    resolved = None
    for provider in ("openai", "anthropic", "google", "deepseek", "mistral"):
        if (resolved := catalog.lookup((provider,), model, at)) is not None:
            break
    return resolved


@dataclass
class ScopeForecast:
    scope: dict[str, str]
    horizon_days: int
    level: int
    model: str
    days: list[dict[str, Any]]
    total: Decimal
    low: Decimal
    high: Decimal
    buffer: Decimal
    history_days: int
    price_changes: list[PriceChange] = field(default_factory=list)
    scenario: dict[str, Any] | None = None
    baseline_total: Decimal | None = None  # without the scenario
    notes: list[str] = field(default_factory=list)

    @property
    def suggested_budget(self) -> Decimal:
        return (self.total * (1 + self.buffer)).quantize(CENT)

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope, "horizon_days": self.horizon_days, "level": self.level, "model": self.model,
            "history_days": self.history_days,
            "total_usd": format_usd(self.total.quantize(CENT)), "lo_usd": format_usd(self.low.quantize(CENT)),
            "hi_usd": format_usd(self.high.quantize(CENT)), "buffer": f"{self.buffer:.2f}",
            "suggested_budget_usd": format_usd(self.suggested_budget),
            "baseline_total_usd": None if self.baseline_total is None else format_usd(self.baseline_total.quantize(CENT)),
            "scenario": self.scenario, "price_changes": [c.to_json() for c in self.price_changes],
            "notes": self.notes, "forecast": self.days,
        }  # fmt: skip


def daily_history(ledger: Ledger, where: Mapping[str, str], end_day: date, *, sources: Iterable[str] | None = None,
                  exclude: Iterable[str] = ()) -> tuple[list[date], list[float]]:  # fmt: skip
    """Daily spend (UTC days) from the scope's first day (at most a year back) to the day before ``end_day``."""
    start = datetime.combine(end_day - timedelta(days=MAX_HISTORY_DAYS), datetime.min.time(), UTC)
    end = datetime.combine(end_day, datetime.min.time(), UTC)
    by = ["day", "source"] if sources is not None or exclude else ["day"]
    rep = ledger.spend_report(ReportQuery.build(by=by, since=start, until=end, where=dict(where)))
    want, skip = set(sources or ()), set(exclude)
    daily: dict[date, Decimal] = {}
    for r in rep.rows:
        src = r.keys.get("source")
        if src is not None and ((want and src not in want) or src in skip):
            continue
        d = date.fromisoformat(r.keys["day"])
        daily[d] = daily.get(d, ZERO) + r.cost_usd
    if not daily:
        return [], []
    first = min(daily)
    days = [first + timedelta(days=i) for i in range((end_day - first).days)]
    return days, [float(daily.get(d, ZERO)) for d in days]


def forecast_scope(ledger: Ledger, config: Config, catalog: PriceCatalog, where: Mapping[str, str], horizon: int,
                   *, move: Move | None = None, change: Decimal | None = None, now: datetime | None = None,
                   exclude_sources: Iterable[str] = ()) -> ScopeForecast:  # fmt: skip
    from tokenops.analytics.forecast import forecast, forecast_total

    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    days, values = daily_history(ledger, where, today, exclude=exclude_sources)
    scope_text = ",".join(f"{k}={v}" for k, v in where.items()) or "all spend"
    if not days:
        raise UsageError(f"no data for {scope_text}: no spend before today to forecast from")
    fc = forecast([datetime.combine(d, datetime.min.time()) for d in days], values, horizon,
                  level=config.planning.level, step=timedelta(days=1), nonnegative=True, fill="zero")  # fmt: skip
    tot = forecast_total(fc)
    future = [today + timedelta(days=i) for i in range(horizon)]
    mix = _mix(ledger, where, datetime.combine(today, datetime.min.time(), UTC))
    base_factors, changes = day_factors(mix, catalog, future, now, None, None)
    factors, _ = day_factors(mix, catalog, future, now, move, change) if (move or change) else (base_factors, [])
    rows = []
    total = base_total = ZERO
    for p, f, bf in zip(fc.points, factors, base_factors, strict=True):
        v, lo, hi = _d(p.value) * f, _d(p.lo) * f, _d(p.hi) * f
        rows.append({"date": p.timestamp.date().isoformat(), "value": format_usd(v.quantize(Decimal("0.000001"))),
                     "lo": format_usd(lo.quantize(Decimal("0.000001"))),
                     "hi": format_usd(hi.quantize(Decimal("0.000001")))})  # fmt: skip
        total += v
        base_total += _d(p.value) * bf
    # the total's interval scales with the factors the same way as its value
    ratio = total / _d(tot.value) if tot.value else Decimal(1)
    low, high = _d(tot.lo) * ratio, _d(tot.hi) * ratio
    scenario = None
    if move or change:
        scenario = {"move": None if move is None else {"share": f"{move.share:.4f}", "from": move.source,
                                                        "to": move.target},
                    "price_change": None if change is None else f"{change:.4f}"}  # fmt: skip
    return ScopeForecast(dict(where), horizon, fc.level, fc.model, rows, total, low, high, config.planning.buffer,
                         len(days), changes, scenario, base_total if scenario else None, list(fc.notes))  # fmt: skip


# --- the budget plan ---------------------------------------------------------------------------------------------
def quarter_window(text: str) -> tuple[date, date]:
    m = re.fullmatch(r"\s*(\d{4})-?[Qq]([1-4])\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= 9998:
        raise UsageError(f"--quarter: {text!r} is not a quarter like 2027-Q1")
    year, q = int(m.group(1)), int(m.group(2))
    start = date(year, 3 * q - 2, 1)
    end = date(year + (q == 4), (3 * q) % 12 + 1, 1)
    return start, end


@dataclass
class PlanLine:
    scope: dict[str, str]
    fixed: Decimal
    variable: Decimal
    variable_low: Decimal
    variable_high: Decimal
    reserve: Decimal
    buffer: Decimal
    model: str
    history_days: int
    spent: Decimal = ZERO  # already spent in the quarter (a quarter under way)

    @property
    def budget(self) -> Decimal:
        return self.spent + self.fixed + self.variable + self.reserve + self.buffer

    def to_json(self) -> dict[str, Any]:
        fields = {"spent_usd": format_usd(self.spent), "fixed_usd": format_usd(self.fixed), "variable_usd": format_usd(self.variable),
                  "variable_lo_usd": format_usd(self.variable_low), "variable_hi_usd": format_usd(self.variable_high),
                  "training_reserve_usd": format_usd(self.reserve), "buffer_usd": format_usd(self.buffer),
                  "budget_usd": format_usd(self.budget), "model": self.model, "history_days": self.history_days}  # fmt: skip
        # a line of `--by model` keeps its model; the forecast's model is then "plan_model" (any such clash alike)
        return {**self.scope, **{f"plan_{k}" if k in self.scope else k: v for k, v in fields.items()}}


@dataclass
class BudgetPlan:
    quarter: str
    start: date
    end: date
    lines: list[PlanLine]
    assumptions: list[str]

    @property
    def total(self) -> Decimal:
        return sum((line.budget for line in self.lines), ZERO)

    def to_json(self) -> dict[str, Any]:
        return {"quarter": self.quarter, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "total_budget_usd": format_usd(self.total), "lines": [line.to_json() for line in self.lines],
                "assumptions": self.assumptions}  # fmt: skip


def plan_budget(ledger: Ledger, config: Config, quarter: str, *, by: Sequence[str] = ("team", "env"),
                now: datetime | None = None) -> BudgetPlan:  # fmt: skip
    from tokenops.analytics.forecast import forecast, forecast_total

    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    start, end = quarter_window(quarter)
    if end <= today:
        raise UsageError(f"--quarter {quarter} is over: plan a quarter that has not ended")
    if (end - today).days > MAX_PLAN_DAYS:  # the forecast runs from today to the quarter's end
        raise UsageError(f"--quarter {quarter} ends more than two years from now: plan a nearer quarter")
    check_scopes(by)
    p = config.planning
    fixed_sources = set(p.fixed_sources)
    scopes = ledger.spend_report(ReportQuery.build(by=list(by), since=datetime.combine(
        today - timedelta(days=90), datetime.min.time(), UTC), until=now))  # fmt: skip
    if not scopes.rows:
        raise UsageError("no data: the ledger has no spend in the last 90 days to plan from")
    first_day = max(start, today)
    h_end = (end - today).days  # forecast from today to the quarter's end, keep the quarter's part
    keep = slice((first_day - today).days, h_end)
    quarter_days = (end - start).days
    plan_days = (end - first_day).days  # the days still to come (all of them for a quarter not begun)
    q_start = datetime.combine(start, datetime.min.time(), UTC)
    month_start = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    month_end = today.replace(day=1)
    lines = []
    for s in scopes.rows:
        where = dict(s.keys)
        days, values = daily_history(ledger, where, today, exclude=fixed_sources)
        variable = lo = hi = ZERO
        model = "none"
        if days:
            fc = forecast([datetime.combine(d, datetime.min.time()) for d in days], values, h_end,
                          level=p.level, step=timedelta(days=1), nonnegative=True, fill="zero")  # fmt: skip
            part = fc.points[keep]
            variable = sum((_d(x.value) for x in part), ZERO)
            sub = replace(fc, points=part, sigma=fc.sigma[keep] if fc.sigma else ())
            t = forecast_total(sub)
            lo, hi, model = _d(t.lo), _d(t.hi), fc.model
        fixed_rep = ledger.spend_report(ReportQuery.build(
            by=["source"], since=datetime.combine(month_start, datetime.min.time(), UTC),
            until=datetime.combine(month_end, datetime.min.time(), UTC), where=where))  # fmt: skip
        fixed_month = sum((r.cost_usd for r in fixed_rep.rows if r.keys["source"] in fixed_sources), ZERO)
        fixed = fixed_month * Decimal(plan_days) / Decimal((month_end - month_start).days)
        spent = ZERO
        if first_day > start:  # under way: what the quarter has already cost
            spent = ledger.spend_report(ReportQuery.build(by=[], since=q_start, until=datetime.combine(
                first_day, datetime.min.time(), UTC), where=where)).total_cost_usd  # fmt: skip
        training = ZERO
        if where.get("workload") != "training":
            tdays, tvalues = daily_history(ledger, {**where, "workload": "training"}, today)
            if tdays and sum(tvalues) > 0:
                tf = forecast([datetime.combine(d, datetime.min.time()) for d in tdays], tvalues, h_end,
                              level=p.level, step=timedelta(days=1), nonnegative=True, fill="zero")  # fmt: skip
                training = sum((_d(x.value) for x in tf.points[keep]), ZERO)
        reserve = max(variable * p.training_reserve, training)
        buffer = (variable + reserve) * p.buffer
        q = Decimal("0.01")
        lines.append(PlanLine(where, fixed.quantize(q), variable.quantize(q), lo.quantize(q), hi.quantize(q),
                              reserve.quantize(q), buffer.quantize(q), model, len(days), spent.quantize(q)))  # fmt: skip
    lines.sort(key=lambda line: -line.budget)
    assumptions = [
        f"history: each scope's daily spend since its first call (up to {MAX_HISTORY_DAYS} days), days without "
        "calls counted as $0; scopes are those with spend in the last 90 days",
        f"variable allowance: the forecast of each scope's spend (sources other than {', '.join(sorted(fixed_sources))}) "
        f"over {plan_days} days ({first_day.isoformat()} to {(end - timedelta(days=1)).isoformat()}"
        + (f", the rest of the quarter's {quarter_days}: what it has cost so far is spent_usd" if first_day > start
           else "") + f"), model chosen by backtest; lo/hi is its {p.level} % interval",
        f"base (fixed) costs: events from {', '.join(sorted(fixed_sources))} in {month_start:%Y-%m}, prorated to the "
        f"same {plan_days} days (flat)",
        f"training/fine-tuning reserve: the larger of {p.training_reserve:.0%} of the variable allowance and the "
        "forecast of workload=training spend",
        f"emergency buffer: {p.buffer:.0%} of the variable allowance and the reserve (fixed costs are known)",
        "prices: today's; known future price changes show in `tokenops forecast`",
    ]
    return BudgetPlan(quarter, start, end, lines, assumptions)
