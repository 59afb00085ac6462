"""The savings report: what routing, fallbacks, budget downgrades and the response cache changed, in dollars.

Each call the gateway served with another model than the one asked for (its event's ``route_reason``) or from
the response cache is compared with its counterfactual: the same usage priced at the model the client asked
for, routed as the gateway would have routed it then (alias, ``provider/`` prefix, catalog) and priced with that
model's row in force at the call's time. ``saved`` is the counterfactual minus what was paid; it is negative
where a fallback ended on a dearer model (the price of keeping the call alive). A call whose counterfactual
cannot be priced (``tokenops/auto`` names no model; an unpriced model) counts in ``calls`` but not in the dollars,
and in ``unpriced``. A cache hit's counterfactual is its event's ``cost_avoided_usd``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenops import money
from tokenops.config import Config
from tokenops.errors import GatewayError, UsageError
from tokenops.gateway.stages.router import RouterStage
from tokenops.ledger.base import Ledger
from tokenops.ledger.events import SpendEvent
from tokenops.pricing.catalog import PriceCatalog
from tokenops.pricing.model import price_usage
from tokenops.tags import TagError, check_name

_FLAVOR = {"messages": "anthropic", "gemini.generate": "gemini", "gemini.stream": "gemini"}
DIMENSIONS = ("kind", "model", "key", "user")  # besides tag names


def kind_of(e: SpendEvent) -> str:
    """``cache_hit``, ``fallback``, ``downgrade`` (a budget's) or ``routed`` (a task's tier)."""
    reason = e.route_reason or ""
    if e.cache == "hit":
        return "cache_hit"
    if reason.startswith("fallback"):
        return "fallback"
    if reason.startswith("budget"):
        return "downgrade"
    return "routed"


@dataclass
class SavingsRow:
    group: dict[str, str]
    calls: int = 0
    paid: Decimal = money.ZERO
    counterfactual: Decimal = money.ZERO
    unpriced: int = 0  # calls whose counterfactual (or cost) has no price: not in the dollars

    @property
    def saved(self) -> Decimal:
        return self.counterfactual - self.paid

    def to_json(self) -> dict[str, Any]:
        return {**self.group, "calls": self.calls, "unpriced": self.unpriced, "paid_usd": money.format_usd(self.paid),
                "counterfactual_usd": money.format_usd(self.counterfactual),
                "saved_usd": money.format_usd(self.saved)}  # fmt: skip


@dataclass
class SavingsReport:
    by: list[str]
    rows: list[SavingsRow] = field(default_factory=list)

    @property
    def total(self) -> SavingsRow:
        t = SavingsRow({})
        for r in self.rows:
            t.calls, t.unpriced = t.calls + r.calls, t.unpriced + r.unpriced
            t.paid, t.counterfactual = t.paid + r.paid, t.counterfactual + r.counterfactual
        return t

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "rows": [r.to_json() for r in self.rows], "total": self.total.to_json()}


class Counterfactual:
    """What an event's usage would have cost on the model its client asked for."""

    def __init__(self, config: Config, catalog: PriceCatalog):
        self.router = RouterStage(config, catalog)
        self.catalog = catalog

    def cost(self, e: SpendEvent) -> Decimal | None:
        flavor = _FLAVOR.get(e.route, "openai")
        try:
            provider, model = self.router.resolve(e.model_requested, flavor, e.ts, e.route)
        except GatewayError:
            return None
        row = self.catalog.lookup(self.router.price_ids[provider], model, e.ts)
        return None if row is None else price_usage(e.usage, row).total


def savings_report(ledger: Ledger, config: Config, catalog: PriceCatalog, *, by: Sequence[str],
                   since: datetime | None = None, until: datetime | None = None,
                   where: Mapping[str, str] | None = None) -> SavingsReport:  # fmt: skip
    by = list(by) or ["kind"]
    for d in by:
        if not d:
            raise UsageError("--by has an empty name")
        if d not in DIMENSIONS:
            try:
                check_name(d)
            except TagError:
                raise UsageError(f"--by {d!r}: not {', '.join(DIMENSIONS)} or a tag name") from None
    if len(set(by)) != len(by):
        raise UsageError("--by names a dimension twice")
    counterfactual = Counterfactual(config, catalog)
    groups: dict[tuple[str, ...], SavingsRow] = {}
    for e in ledger.routed_events(since, until):
        if where and any(e.tags.get(k) != v for k, v in where.items()):
            continue
        values = {d: _value(e, d) for d in by}
        row = groups.setdefault(tuple(values.values()), SavingsRow(values))
        row.calls += 1
        # a cache hit paid nothing; its event says what the kept answer would cost now
        other = e.cost_avoided_usd if e.cache == "hit" else counterfactual.cost(e)
        if other is None or e.cost_usd is None:
            row.unpriced += 1
            continue
        row.paid += e.cost_usd
        row.counterfactual += other
    rows = sorted(groups.values(), key=lambda r: (-r.saved, tuple(r.group.values())))
    return SavingsReport(by, rows)


def _value(e: SpendEvent, dimension: str) -> str:
    if dimension == "kind":
        return kind_of(e)
    if dimension == "model":
        return e.model_requested
    if dimension == "key":
        return e.key_id or "(none)"
    if dimension == "user":
        return e.end_user or "(none)"
    return e.tags.get(dimension) or "(none)"
