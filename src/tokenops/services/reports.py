"""Reports: spend breakdowns, and the status of every budget this period."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenops.config import Config
from tokenops.ledger.base import Ledger
from tokenops.ledger.reports import ReportQuery, SpendReport
from tokenops.policy.definitions import Definitions
from tokenops.policy.engine import budget_status
from tokenops.policy.periods import window


def spend_report(ledger: Ledger, *, by: Sequence[str], since: datetime | None = None, until: datetime | None = None,
                 where: Mapping[str, str] | None = None, timezone: str = "UTC", limit: int | None = None) -> SpendReport:  # fmt: skip
    """Spend grouped by ``by`` (tags, model, provider, key, user, status, source, route, day, week, month)."""
    return ledger.spend_report(ReportQuery.build(by, since, until, where, timezone, limit))


def budget_statuses(ledger: Ledger, config: Config, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every budget of the config and the ledger this period, from the ledger's sums (no calls in flight)."""
    now = now or datetime.now(UTC)
    rows = []
    for b, source in Definitions.of(ledger, config).all("budget"):
        w = window(b.period, b.timezone, now, custom=b.custom_window())
        rows.append({**budget_status(b, w, ledger.spent(b.scope, w.start, w.end, b.unit), Decimal(0), now),
                     "source": source})  # fmt: skip
    return rows
