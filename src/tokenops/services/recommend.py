"""``tokenops recommend``: where the spend of a window was waste, with the evidence and a monthly saving.

Computed from the ledger alone (prompts are not stored: the gateway records a hash and the size of each call's
stable prefix and a hash of the whole request, :mod:`tokenops.gateway.fingerprint`), priced with the catalog's
rows in force now. Each finding is one group (``--by``, team and feature by default) and one kind:

``prompt_caching``
    the same stable prefix (system prompt, tools, earlier turns) of at least ``MIN_CACHE_PREFIX`` tokens sent
    again and again without the provider's prompt cache being read: the repeats' prefix tokens at the input price
    less the cache-read price (Anthropic's one cache write premium taken off).
``oversized_context``
    calls whose input is more than ``CONTEXT_FACTOR`` times their group's median (and at least
    ``CONTEXT_MIN_EXCESS`` tokens over it): the excess at the input price.
``max_tokens_headroom``
    calls asking for an output limit far above what they use (the median limit at least ``HEADROOM_FACTOR`` times
    the 95th percentile of the output): no dollars (providers bill what is used), but every such call reserves
    budget for output it never produces; the suggested limit is twice the 95th percentile.
``frontier_for_simple``
    short calls (at most ``SIMPLE_INPUT`` tokens in, ``SIMPLE_OUTPUT`` out) on a model whose output costs at least
    ``FRONTIER_OUTPUT_PRICE`` per million: the same usage on the cheapest model of the config's lowest tier
    (``routing.tiers``), else the provider's small model.
``duplicates``
    the same request from the same key within ``DUPLICATE_WINDOW`` seconds (a retry after a timeout, a double
    submit): the repeats' cost, which the response cache or an idempotent client would not pay.
``batch``
    background work (the ``workload`` tag ``batch``, ``background``, ``offline`` or ``nightly``) sent as live
    calls: the part of its cost the batch APIs' 50 % discount would save.
``off_peak``
    background work sent at hours when its model's price is higher than at other hours of the same day (a
    provider's time-of-day prices, such as DeepSeek's off-peak discount while it ran): each call's usage at the
    cheapest hour's price row against the row of the hour it was sent.

A window's saving is scaled to 30 days (``monthly_usd``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenops import money
from tokenops.config import Config
from tokenops.errors import UsageError
from tokenops.ledger.base import USAGE_ROW_COLUMNS, Ledger
from tokenops.pricing.catalog import PriceCatalog
from tokenops.pricing.model import PriceRow, price_usage
from tokenops.usage import Usage

MIN_CACHE_PREFIX = 1024  # tokens: OpenAI's and Anthropic's smallest cacheable prefix
MIN_REPEATS = 3
CONTEXT_FACTOR = 5
CONTEXT_MIN_EXCESS = 2000
HEADROOM_FACTOR = 4
HEADROOM_MIN_LIMIT = 1000
SIMPLE_INPUT, SIMPLE_OUTPUT = 500, 200
FRONTIER_OUTPUT_PRICE = Decimal(10)
DUPLICATE_WINDOW = 60.0
BATCH_WORKLOADS = frozenset(("batch", "background", "offline", "nightly"))
BATCH_ROUTES = frozenset(("chat.completions", "messages", "embeddings", "responses"))
SMALL_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash-lite"}
GROUPS = ("team", "feature", "workload", "provider", "model", "key")
M = Decimal(1_000_000)


@dataclass
class Finding:
    kind: str
    group: dict[str, str]
    calls: int
    evidence: str
    window_usd: Decimal
    monthly_usd: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.group, "calls": self.calls, "evidence": self.evidence,
                "window_saving_usd": money.format_usd(self.window_usd),
                "monthly_saving_usd": money.format_usd(self.monthly_usd)}  # fmt: skip


@dataclass(frozen=True)
class _Row:
    ts: datetime
    key_id: str | None
    team: str | None
    feature: str | None
    workload: str | None
    provider: str
    model_used: str
    route: str
    stream: bool
    input_tokens: int
    cache_read_tokens: int
    output_tokens: int
    max_output: int | None
    cost_usd: Decimal | None
    prefix_hash: str | None
    prefix_tokens: int
    request_hash: str | None
    cache: str


class _Prices:
    def __init__(self, catalog: PriceCatalog, config: Config, now: datetime):
        self.catalog, self.config, self.now = catalog, config, now
        self._rows: dict[tuple[str, str], PriceRow | None] = {}
        self._days: dict[tuple[str, str, str], list[PriceRow]] = {}

    def row_at(self, provider: str, model: str, at: datetime) -> PriceRow | None:
        ids = self.config.price_catalogs(provider) if provider in self.config.providers else (provider,)
        return self.catalog.lookup(ids, model, at)

    def cheapest_hour(self, provider: str, model: str, day: datetime) -> list[PriceRow]:
        """The distinct rows that price ``model`` over the 24 UTC hours of ``day`` (more than one: time-of-day
        prices)."""
        key = (provider, model, day.date().isoformat())
        if key not in self._days:
            start = day.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=day.tzinfo or UTC)
            found = [self.row_at(provider, model, start + timedelta(minutes=30 + 60 * h)) for h in range(24)]
            self._days[key] = list({r.id: r for r in found if r is not None}.values())
        return self._days[key]

    def row(self, provider: str, model: str) -> PriceRow | None:
        key = (provider, model)
        if key not in self._rows:
            ids = self.config.price_catalogs(provider) if provider in self.config.providers else (provider,)
            self._rows[key] = self.catalog.lookup(ids, model, self.now)
        return self._rows[key]


def recommend(ledger: Ledger, config: Config, catalog: PriceCatalog, *, by: Sequence[str] = ("team", "feature"),
              since: datetime | None = None, until: datetime | None = None,
              now: datetime | None = None) -> list[Finding]:  # fmt: skip
    now = now or datetime.now(UTC)
    until = until or now
    since = since or until - timedelta(days=30)
    for d in by:
        if d not in GROUPS:
            raise UsageError(f"--by {d!r}: group by {', '.join(GROUPS)}")
    rows = [_Row(*(r[i] for i in range(len(USAGE_ROW_COLUMNS)))) for r in ledger.usage_rows(since, until)]
    scale = Decimal(30 * 86400) / Decimal(max((until - since).total_seconds(), 3600.0))
    prices = _Prices(catalog, config, now)
    groups: dict[tuple[str, ...], list[_Row]] = defaultdict(list)
    for r in rows:
        groups[tuple(_dim(r, d) for d in by)].append(r)
    findings: list[Finding] = []
    for key, members in groups.items():
        group = dict(zip(by, key, strict=True))
        for finder in (_prompt_caching, _oversized, _headroom, _frontier, _duplicates, _batch, _off_peak):
            for kind, calls, evidence, usd in finder(members, prices, config):
                findings.append(Finding(kind, group, calls, evidence, usd, money.quantize(usd * scale)))
    findings.sort(key=lambda f: (-f.monthly_usd, f.kind, tuple(f.group.values())))
    return findings


def _dim(r: _Row, d: str) -> str:
    value = {"team": r.team, "feature": r.feature, "workload": r.workload, "provider": r.provider,
             "model": r.model_used, "key": r.key_id}[d]  # fmt: skip
    return value or "(none)"


_Out = Iterable[tuple[str, int, str, Decimal]]


def _prompt_caching(rows: list[_Row], prices: _Prices, config: Config) -> _Out:
    by_prefix: dict[tuple[str, str, str], list[_Row]] = defaultdict(list)
    for r in rows:
        if r.prefix_hash and r.prefix_tokens >= MIN_CACHE_PREFIX and r.cache != "hit":
            by_prefix[(r.provider, r.model_used, r.prefix_hash)].append(r)
    for (provider, model, _h), calls in by_prefix.items():
        if len(calls) < MIN_REPEATS:
            continue
        prefix = max(c.prefix_tokens for c in calls)
        cached = sum(c.cache_read_tokens for c in calls)
        possible = (len(calls) - 1) * prefix
        if cached >= possible // 2:  # the provider's cache already serves it
            continue
        row = prices.row(provider, model)
        if row is None or row.input_per_mtok is None:
            continue
        read = row.cache_read_per_mtok if row.cache_read_per_mtok is not None else row.input_per_mtok
        write_premium = (row.cache_write_5m_per_mtok - row.input_per_mtok) if row.cache_write_5m_per_mtok else 0
        usd = (Decimal(possible - cached) * (row.input_per_mtok - read) - Decimal(prefix) * Decimal(write_premium)) / M
        if usd > 0:
            yield ("prompt_caching", len(calls), f"{len(calls)} calls to {model} repeat one ~{prefix}-token prefix; "
                   f"{cached} of {possible} repeatable tokens read from the provider's cache: put the stable part "
                   "first and enable prompt caching", usd)  # fmt: skip


def _oversized(rows: list[_Row], prices: _Prices, config: Config) -> _Out:
    if len(rows) < 10:
        return
    median = statistics.median(r.input_tokens for r in rows)
    limit = max(CONTEXT_FACTOR * median, median + CONTEXT_MIN_EXCESS)
    big = [r for r in rows if r.input_tokens > limit]
    usd = Decimal(0)
    for r in big:
        row = prices.row(r.provider, r.model_used)
        if row is not None and row.input_per_mtok is not None:
            usd += Decimal(r.input_tokens - int(median)) * row.input_per_mtok / M
    if big and usd > 0:
        yield ("oversized_context", len(big), f"{len(big)} of {len(rows)} calls send over {int(limit)} input tokens; "
               f"the median is {int(median)}: trim history or retrieve less", usd)  # fmt: skip


def _headroom(rows: list[_Row], prices: _Prices, config: Config) -> _Out:
    limited = [r for r in rows if r.max_output]
    if len(limited) < 10:
        return
    outputs = sorted(r.output_tokens for r in limited)
    p95 = outputs[min(len(outputs) - 1, int(0.95 * len(outputs)))]
    typical = statistics.median(r.max_output or 0 for r in limited)
    if typical >= HEADROOM_MIN_LIMIT and typical >= HEADROOM_FACTOR * max(p95, 1):
        yield ("max_tokens_headroom", len(limited), f"max_tokens is typically {int(typical)} but 95% of answers use "
               f"at most {p95} tokens: set it near {2 * max(p95, 1)} (no direct saving: providers bill what is "
               "used, but each call reserves budget for its whole limit)", Decimal(0))  # fmt: skip


def _frontier(rows: list[_Row], prices: _Prices, config: Config) -> _Out:
    small: dict[tuple[str, str], list[_Row]] = defaultdict(list)
    for r in rows:
        if r.input_tokens <= SIMPLE_INPUT and r.output_tokens <= SIMPLE_OUTPUT and r.cost_usd is not None:
            small[(r.provider, r.model_used)].append(r)
    for (provider, model), calls in small.items():
        row = prices.row(provider, model)
        if row is None or (row.output_per_mtok or 0) < FRONTIER_OUTPUT_PRICE or len(calls) < MIN_REPEATS:
            continue
        target = _cheaper_model(provider, config, prices)
        if target is None or target[0] == model:
            continue
        name, alt = target
        paid = sum((c.cost_usd or Decimal(0) for c in calls), Decimal(0))
        instead = sum((Decimal(c.input_tokens) * (alt.input_per_mtok or 0) + Decimal(c.output_tokens)
                       * (alt.output_per_mtok or 0) for c in calls), Decimal(0)) / M  # fmt: skip
        if paid > instead:
            yield ("frontier_for_simple", len(calls), f"{len(calls)} short calls (<= {SIMPLE_INPUT} tokens in, "
                   f"<= {SIMPLE_OUTPUT} out) on {model}: try {name} (a task tier, or tokenops evaluate models)",
                   paid - instead)  # fmt: skip


def _cheaper_model(provider: str, config: Config, prices: _Prices) -> tuple[str, PriceRow] | None:
    tiers = list(config.routing.tiers.values())
    candidates = list(tiers[0]) if tiers else [SMALL_MODELS.get(provider, "")]
    best: tuple[Decimal, str, PriceRow] | None = None
    for name in candidates:
        for p in ([provider] if not tiers else list(config.providers) or [provider]):
            row = prices.row(p, name)
            if row is not None and row.output_per_mtok is not None:
                if best is None or row.output_per_mtok < best[0]:
                    best = (row.output_per_mtok, name, row)
    return None if best is None else (best[1], best[2])


def _duplicates(rows: list[_Row], prices: _Prices, config: Config) -> _Out:
    last: dict[tuple[str | None, str], datetime] = {}
    repeats, usd = 0, Decimal(0)
    for r in rows:  # oldest first
        if not r.request_hash or r.cache == "hit":
            continue
        k = (r.key_id, r.request_hash)
        seen = last.get(k)
        if seen is not None and (r.ts - seen).total_seconds() <= DUPLICATE_WINDOW:
            repeats += 1
            usd += r.cost_usd or 0
        last[k] = r.ts
    if repeats and usd > 0:
        yield ("duplicates", repeats, f"{repeats} calls repeated the same request from the same key within "
               f"{int(DUPLICATE_WINDOW)} s (retries, double submits): make clients idempotent or turn on the "
               "response cache", usd)  # fmt: skip


def _batch(rows: list[_Row], prices: _Prices, config: Config) -> _Out:
    live = [r for r in rows if (r.workload or "") in BATCH_WORKLOADS and r.route in BATCH_ROUTES and r.cost_usd]
    if live:
        paid = sum((r.cost_usd or Decimal(0) for r in live), Decimal(0))
        yield ("batch", len(live), f"{len(live)} calls of background work (workload tag) sent live: the batch APIs "
               "(/v1/batches, /v1/messages/batches) bill them at half price within 24 h", paid / 2)  # fmt: skip


def _off_peak(rows: list[_Row], prices: _Prices, config: Config) -> _Out:
    calls, usd = 0, Decimal(0)
    for r in rows:
        if (r.workload or "") not in BATCH_WORKLOADS or r.cost_usd is None:
            continue
        at = r.ts if r.ts.tzinfo else r.ts.replace(tzinfo=UTC)
        day_rows = prices.cheapest_hour(r.provider, r.model_used, at)
        if len(day_rows) < 2:
            continue
        usage = Usage(input_tokens=r.input_tokens, cache_read_tokens=min(r.cache_read_tokens, r.input_tokens),
                      output_tokens=r.output_tokens)  # fmt: skip
        here = prices.row_at(r.provider, r.model_used, at)
        if here is None:
            continue
        cheapest = min(price_usage(usage, row).total for row in day_rows)
        paid_here = price_usage(usage, here).total
        if cheapest < paid_here:
            calls += 1
            usd += paid_here - cheapest
    if calls:
        yield ("off_peak", calls, f"{calls} calls of background work sent at peak-price hours: their model is cheaper at "
               "other hours of the day; schedule them there", usd)  # fmt: skip
