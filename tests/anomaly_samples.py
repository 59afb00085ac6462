"""Spend with a runaway loop and one huge call: the anomaly watch's test data (tests/analytics, tests/gateway)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tokenops.ledger.events import SpendEvent
from tokenops.usage import Usage

NOW = datetime(2026, 11, 20, 12, 0, 30, tzinfo=UTC)  # 30 s into a bucket: the one before has settled
SPIKE = (NOW - timedelta(minutes=5, seconds=30), NOW - timedelta(seconds=30))  # the last whole bucket
HUGE_AT = NOW - timedelta(minutes=20)


def _event(i: int, ts: datetime, team: str, *, model: str = "gpt-4o-mini", key: str | None = None,
           tokens: tuple[int, int] = (1000, 200), cost: str = "0.00027", status: str = "ok") -> SpendEvent:  # fmt: skip
    return SpendEvent(request_id=f"r{i}", ts=ts, source="test", provider="openai", model_requested=model,
                      model_used=model, usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
                      cost_usd=Decimal(cost), tags={"team": team, "feature": f"{team}-bot"}, key_id=key or f"k-{team}",
                      latency_ms=300.0, status=status, http_status=200 if status == "ok" else 500)  # type: ignore[arg-type]  # fmt: skip


def traffic(days: int = 2, seed: int = 1) -> list[SpendEvent]:
    """Two teams' steady traffic (a daily rhythm), a runaway loop on gpt-4o in the last whole bucket, and one
    call with 75 times the support bot's usual tokens 20 minutes ago."""
    rng = random.Random(seed)
    out: list[SpendEvent] = []
    t = (NOW - timedelta(days=days)).replace(second=0)
    i = 0
    while t < NOW - timedelta(seconds=30):
        busy = 1 + (9 <= t.hour < 18)
        for team in ("search", "support"):
            for _ in range(rng.randint(busy, busy + 1)):
                i += 1
                out.append(_event(i, t + timedelta(seconds=rng.randint(0, 59)), team))
        if SPIKE[0] <= t < SPIKE[1]:
            for _ in range(25):
                i += 1
                out.append(_event(i, t + timedelta(seconds=rng.randint(0, 59)), "search", model="gpt-4o",
                                  key="k-loop", tokens=(8000, 500), cost="0.025"))  # fmt: skip
        t += timedelta(minutes=1)
    out.append(_event(i + 1, HUGE_AT, "support", key="k-support", tokens=(90000, 500), cost="0.0135"))
    return out
