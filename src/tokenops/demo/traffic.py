"""Realistic synthetic history for the demo: three teams, 30 days, several providers and models.

The shape is what a platform team actually sees: a daily rhythm (busy office hours, quiet nights), quieter
weekends, a production/dev split, prompt-cache reads on long shared prompts, a few failures, one model with
no price, and one runaway day in the research team. Token counts are drawn from a seeded generator; costs
come from the same catalog and arithmetic the gateway uses, priced at each call's own time.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tokenops.ledger.events import SpendEvent
from tokenops.money import ZERO
from tokenops.pricing.catalog import PriceCatalog
from tokenops.pricing.model import PriceRow, price_usage
from tokenops.usage import Usage


@dataclass(frozen=True)
class Workload:
    team: str
    feature: str
    provider: str
    model: str
    per_day: int  # calls on an average weekday
    prompt: int  # median prompt tokens
    output: int  # median output tokens
    env_split: tuple[float, float, float]  # share of prod, staging, dev
    cache_share: float = 0.0  # share of calls that read a cached prefix
    stream_share: float = 0.5
    workload: str = "production"


WORKLOADS = (
    Workload("search", "search-summary", "openai", "gpt-4o-mini", 260, 1800, 180, (0.8, 0.1, 0.1), 0.55, 0.7),
    Workload("search", "query-rewrite", "openai", "gpt-4o-mini", 320, 220, 40, (0.85, 0.05, 0.1), 0.0, 0.0),
    Workload("search", "answer-synthesis", "anthropic", "claude-sonnet-4-5", 70, 5200, 420, (0.75, 0.1, 0.15), 0.6),
    Workload("search", "embeddings", "openai", "text-embedding-3-small", 400, 350, 0, (0.9, 0.05, 0.05), 0.0, 0.0),
    Workload("support", "ticket-reply", "anthropic", "claude-3-5-haiku", 380, 2400, 260, (0.85, 0.05, 0.1), 0.7),
    Workload("support", "triage", "openai", "gpt-4o", 90, 900, 60, (0.9, 0.0, 0.1), 0.2, 0.0),
    Workload("research", "eval-runs", "openai", "o3", 25, 3000, 2600, (0.0, 0.2, 0.8), 0.1, 0.2, "experimental"),
    Workload("research", "prototype", "local", "llama-3.1-8b", 150, 1500, 300, (0.0, 0.0, 1.0), 0.0, 0.5,
             "experimental"),  # fmt: skip
    Workload("research", "agent-sandbox", "local", "mystery-model-7b", 30, 1200, 200, (0.0, 0.0, 1.0), 0.0, 0.5,
             "experimental"),  # fmt: skip
    Workload("research", "batch-labeling", "anthropic", "claude-opus-4", 8, 6000, 900, (0.0, 0.5, 0.5), 0.3, 0.0,
             "background"),  # fmt: skip
)


def _rhythm(hour: int, weekday: int) -> float:
    """Relative traffic at an hour (UTC): office hours peak, nights quiet, weekends at a third."""
    day = 0.25 + 0.75 * math.exp(-(((hour - 14) / 4.0) ** 2))
    return day * (0.35 if weekday >= 5 else 1.0)


def _tokens(rng: random.Random, median: int) -> int:
    if median <= 0:
        return 0
    return max(1, int(rng.lognormvariate(math.log(median), 0.45)))


def generate(
    catalog: PriceCatalog,
    *,
    end: datetime,
    days: int,
    keys: dict[str, str],
    price_ids: dict[str, tuple[str, ...]],
    seed: int = 7,
) -> Iterator[tuple[SpendEvent, PriceRow | None]]:
    """Events for ``days`` days before ``end``; ``keys`` maps team -> key id."""
    rng = random.Random(seed)
    start = (end - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    weights = [_rhythm(h, 0) for h in range(24)]
    mean_weight = sum(weights) / 24
    runaway_day = start + timedelta(days=max(1, days - 9))
    hour = start
    while hour < end:
        r = _rhythm(hour.hour, hour.weekday()) / mean_weight / 24
        for w in WORKLOADS:
            expected = w.per_day * r
            if w.team == "research" and w.feature == "eval-runs" and hour.date() == runaway_day.date():
                expected *= 18  # a runaway evaluation loop: the kind of day anomaly detection is for
            n = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
            for _ in range(n):
                ts = hour + timedelta(seconds=rng.uniform(0, 3600))
                if ts >= end:
                    continue
                yield _event(rng, w, ts, catalog, keys, price_ids)
        hour += timedelta(hours=1)


def _event(rng: random.Random, w: Workload, ts: datetime, catalog: PriceCatalog, keys: dict[str, str],
           price_ids: dict[str, tuple[str, ...]]) -> tuple[SpendEvent, PriceRow | None]:  # fmt: skip
    env = rng.choices(("prod", "staging", "dev"), weights=w.env_split)[0]
    prompt = _tokens(rng, w.prompt)
    output = _tokens(rng, w.output)
    cached = w1 = w5 = reasoning = 0
    if rng.random() < w.cache_share:
        cached = int(prompt * rng.uniform(0.5, 0.9))
    elif w.provider == "anthropic" and w.cache_share and rng.random() < 0.1:
        written = int(prompt * 0.6)  # a cache miss writes the shared prefix: 1-hour TTL for a third of them
        w1, w5 = (written, 0) if rng.random() < 0.3 else (0, written)
    if w.model.startswith(("o1", "o3", "o4")):
        reasoning = int(output * rng.uniform(0.5, 0.8))
    status, http = "ok", 200
    if rng.random() < 0.01:
        status, http = "upstream_error", rng.choice((429, 500, 529 if w.provider == "anthropic" else 503))
    usage = Usage(
        input_tokens=prompt, cache_read_tokens=cached, cache_write_5m_tokens=w5, cache_write_1h_tokens=w1,
        output_tokens=output, reasoning_tokens=reasoning,
    ) if status == "ok" else Usage()  # fmt: skip
    row = catalog.lookup(price_ids[w.provider], w.model, ts) if status == "ok" else None
    cost: Decimal | None = ZERO  # a call that failed upstream costs exactly nothing
    if status == "ok":
        cost = price_usage(usage, row).total if row else None
    route = "messages" if w.provider == "anthropic" else ("embeddings" if "embedding" in w.model else "chat.completions")
    latency = 120 + (output * rng.uniform(8, 25)) + prompt * 0.02
    return SpendEvent(
        request_id="req_" + uuid.UUID(int=rng.getrandbits(128)).hex,
        ts=ts.astimezone(UTC),
        source="demo",
        provider=w.provider,
        model_requested=w.model,
        model_used=w.model,
        route=route,
        stream=route != "embeddings" and rng.random() < w.stream_share,
        usage=usage,
        cost_usd=cost,
        price_row_id=row.id if row else None,
        key_id=keys.get(w.team),
        end_user=f"user-{rng.randint(1, 400):03d}" if w.team == "support" else None,
        tags={"team": w.team, "feature": w.feature, "env": env, "workload": w.workload,
              "project": f"{w.team}-platform"},  # fmt: skip
        status=status,  # type: ignore[arg-type]
        http_status=http,
        latency_ms=round(latency, 1),
        ttft_ms=round(min(latency, 80 + prompt * 0.01), 1),
    ), row
