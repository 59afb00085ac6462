"""``tokenops report portfolio``: spend and unit cost by workload class (production / experimental / background)
and environment, with the budgets, limits and rules that govern each.

A policy *applies* to a class when its scope's ``workload`` and ``env`` conditions (if any) match it and it has
no other condition; it applies *in part* (shown with its other conditions) when it also names a team, key,
model or other tag. Untagged spend is shown as its own class, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenops.config import Config
from tokenops.errors import UsageError
from tokenops.ledger.base import Ledger
from tokenops.ledger.reports import UNPRICED, ReportQuery
from tokenops.money import ZERO, format_usd
from tokenops.policy.definitions import Definitions

CLASS_DIMENSIONS = ("workload", "env")


@dataclass
class PortfolioRow:
    workload: str
    env: str
    requests: int
    tokens: int
    cost_usd: Decimal
    unpriced: int
    share: Decimal
    policies: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        priced = self.requests - self.unpriced
        per_call = self.cost_usd / priced if priced else None
        priced_tokens = self.tokens * priced // self.requests if self.requests else 0  # pro rata: the priced calls'
        per_mtok = self.cost_usd * 1_000_000 / priced_tokens if priced_tokens else None
        return {"workload": self.workload, "env": self.env, "requests": self.requests, "tokens": self.tokens,
                "cost_usd": UNPRICED if priced == 0 and self.requests else format_usd(self.cost_usd),
                "share": f"{self.share:.4f}", "unpriced_requests": self.unpriced,
                "cost_per_call_usd": None if per_call is None else format_usd(per_call.quantize(Decimal("1e-8"))),
                "cost_per_mtok_usd": None if per_mtok is None else format_usd(per_mtok.quantize(Decimal("1e-4"))),
                "policies": self.policies}  # fmt: skip


def portfolio(ledger: Ledger, config: Config, since: datetime | None, until: datetime | None) -> list[PortfolioRow]:
    rep = ledger.spend_report(ReportQuery.build(by=list(CLASS_DIMENSIONS), since=since, until=until))
    if not rep.rows:
        raise UsageError("no data: the ledger has no calls in this window")
    total = rep.total_cost_usd
    defs = Definitions.of(ledger, config)
    policies = [(kind, item) for kind in ("budget", "limit", "rule") for item, _ in defs.all(kind)]
    out = []
    for r in rep.rows:
        row = PortfolioRow(r.keys["workload"], r.keys["env"], r.requests, r.input_tokens + r.output_tokens,
                           r.cost_usd, r.unpriced_requests, r.cost_usd / total if total else ZERO)  # fmt: skip
        for kind, item in policies:
            conds = dict(item.scope.conditions)
            if any(conds.get(d) not in (None, row_value) for d, row_value in (("workload", row.workload),
                                                                           ("env", row.env))):  # fmt: skip
                continue
            others = {k: v for k, v in conds.items() if k not in CLASS_DIMENSIONS}
            text = f"{kind} {item.name}"
            if others:
                text += " (" + ",".join(f"{k}={v}" for k, v in others.items()) + " only)"
            row.policies.append(text)
        out.append(row)
    return out
