"""Budget alerts: thresholds crossed, a budget projected to run out early, a call blocked.

Each alert fires once per budget, period and threshold: the set of fired alerts is loaded from the ledger at
start and every fired alert is recorded there (through the spool) with when and why, so a restart does not
repeat them. Delivery to channels happens in the background (:class:`~tokenops.alerts.AlertDispatcher`): a
failing channel never fails or slows a call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenops.alerts import Alert, new_alert_id
from tokenops.ledger.spool import SpoolUnavailable
from tokenops.money import format_usd
from tokenops.policy.config import BudgetConfig
from tokenops.policy.periods import Window, zone
from tokenops.policy.state import Counter, InMemoryState, PolicyState

FORECAST_MIN_ELAPSED = 0.1  # no run-rate projection from the first tenth of a period: too noisy
FORECAST_EVERY = 60.0  # seconds between projections of one budget


log = logging.getLogger("tokenops.alerts")


def _amount(b: BudgetConfig, value: Decimal) -> str:
    return f"${format_usd(value)}" if b.unit == "usd" else f"{int(value):,} tokens"


class BudgetAlerts:
    """Fires each alert once per budget, period and threshold, across every gateway that shares the state:
    ``fired`` (loaded from the ledger, and what this process fired) answers fast; the state's once-only claim
    decides when two gateways cross the same threshold at once."""

    def __init__(self, submit: Callable[[Alert], None] | None,
                 record: Callable[[dict[str, Any]], Awaitable[None]] | None,
                 state: PolicyState | None = None):  # fmt: skip
        self.submit = submit
        self.record = record
        self.state: PolicyState = state or InMemoryState()
        self.fired: set[tuple[str, str, str, float | None]] = set()
        self._projected: dict[tuple[str, str], datetime] = {}

    def load(self, fired: set[tuple[str, str, str, float | None]]) -> None:
        self.fired |= fired

    async def _fire(self, kind: str, b: BudgetConfig, w: Window, threshold: float | None, spent: Decimal,
                    message: str, now: datetime, details: dict[str, Any] | None = None) -> None:  # fmt: skip
        key = (kind, b.name, w.start.isoformat(), threshold)
        if key in self.fired:
            return
        me = new_alert_id()
        ttl = max(60.0, (w.end - now).total_seconds() + 86_400)
        won = await self.state.claim("alert:" + "|".join(map(str, key)), me, ttl) == me  # may raise: try again later
        self.fired.add(key)
        if not won:
            return  # another gateway fired it
        tz = zone(b.timezone)  # the period as the budget's owner reads it (a Berlin month, not a UTC one)
        alert = Alert(
            id=me, kind=kind, budget=b.name, scope=b.scope.as_dict(),  # type: ignore[arg-type]
            period_start=w.start.astimezone(tz), period_end=w.end.astimezone(tz), threshold=threshold, spent_usd=spent if b.unit == "usd" else None,
            amount_usd=b.amount if b.unit == "usd" else None, message=message, fired_at=now,
            details={"unit": b.unit, "spent": format(spent, "f"), "amount": format(b.amount, "f"), **(details or {})},
        )  # fmt: skip
        if self.submit is not None:
            self.submit(alert)
        if self.record is not None:
            try:
                await self.record({"record": "alert", **alert.to_json()})
            except SpoolUnavailable as exc:  # delivered, not recorded: after a restart it may be sent once more
                log.warning("alert %s was sent but could not be recorded: %s", alert.id, exc)

    async def after_settle(self, b: BudgetConfig, w: Window, counter: Counter, now: datetime) -> None:
        spent = counter.spent
        used = spent / b.amount
        period = w.start.isoformat() if not w.key else w.key
        elapsed = w.fraction_elapsed(now)
        projected = used / Decimal(str(elapsed)) if elapsed >= FORECAST_MIN_ELAPSED else used
        for t in b.thresholds:
            if t.reached(used, projected) and ("threshold", b.name, period, float(t.at)) not in self.fired:
                action = "" if t.action == "alert" else f" (action: {t.action}{' to ' + t.model if t.model else ''})"
                if t.when == "forecast":
                    text = (f"budget {b.name} ({b.scope}) is forecast to pass {t.at * 100:.0f}% by the period's end: "
                            f"{_amount(b, (projected * b.amount).quantize(Decimal('0.01')))} projected, "
                            f"{_amount(b, spent)} spent of {_amount(b, b.amount)}{action}")  # fmt: skip
                else:
                    text = (f"budget {b.name} ({b.scope}) passed {t.at * 100:.0f}%: {_amount(b, spent)} of "
                            f"{_amount(b, b.amount)}{action}")  # fmt: skip
                await self._fire("threshold", b, w, float(t.at), spent, text, now,
                                 {"when": t.when} if t.when == "forecast" else None)  # fmt: skip
        # the run-rate projection is worth a look once a minute per budget, not on every call
        last = self._projected.get((b.name, period))
        if last is not None and (now - last).total_seconds() < FORECAST_EVERY:
            return
        self._projected[(b.name, period)] = now
        elapsed = w.fraction_elapsed(now)
        if elapsed >= FORECAST_MIN_ELAPSED and spent < b.amount and ("forecast", b.name, period, None) not in self.fired:
            projected = spent / Decimal(str(elapsed))
            if projected > b.amount and spent > 0:
                runs_out = w.start + (now - w.start) * float(b.amount / spent)
                if runs_out < w.end:
                    day = runs_out.strftime("%b %d %H:%M UTC")
                    await self._fire("forecast", b, w, None, spent,
                                     f"budget {b.name} ({b.scope}) will be exhausted around {day} at the current "
                                     f"rate (projected {_amount(b, projected.quantize(Decimal('0.01')))} of {_amount(b, b.amount)} by "
                                     f"{w.end:%b %d})", now,
                                     {"exhausted_at": runs_out.isoformat()})  # fmt: skip

    async def blocked(self, b: BudgetConfig, w: Window, counter: Counter, now: datetime) -> None:
        await self._fire("blocked", b, w, None, counter.spent,
                         f"budget {b.name} ({b.scope}) is exhausted: calls are blocked until "
                         f"{(w.end + timedelta(0)):%Y-%m-%d %H:%M} UTC", now)  # fmt: skip
