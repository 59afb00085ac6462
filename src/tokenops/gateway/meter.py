"""Meter: turns a finished call into a priced spend event and makes it durable before the client is done.

Pricing uses the row in force at the call's start (batch results: the batch row, or half the standard one, see
:data:`BATCH_PRICE_FACTOR`), looked up under the model the provider says it used
(``gpt-4o-2024-08-06``), falling back to the name sent upstream. No price: the event is *unpriced* (cost
``None``), the response says ``X-TokenOps-Cost-USD: unpriced``. Calls that carried no usage (rejections,
upstream errors) cost exactly 0.

A call is recorded **once**: a second :meth:`Meter.record` for the same call (an error path after the call
was recorded) returns the first event. Text that came from the provider (the model it says it used, its
request id) is kept only when it is printable and of a sane length.

When the spool cannot take the event (:class:`~tokenops.ledger.spool.SpoolUnavailable`), the call was
already answered by the provider: its event is kept for the spool to write when the disk recovers, as what
the client will see (a 503 in place of the answer), the listeners still settle its cost, and the error is
raised for the route to answer with.

Listeners (``Meter.listeners``: the policy engine's settlement, …) run after the event is durable; one that
fails is logged and never fails the call it observes.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson

from tokenops.call import Call
from tokenops.gateway.fingerprint import fingerprint
from tokenops.gateway.metrics import GatewayMetrics
from tokenops.ledger.base import price_row_record
from tokenops.ledger.events import SpendEvent, Status
from tokenops.ledger.spool import Spool, SpoolUnavailable
from tokenops.money import ZERO
from tokenops.policy.estimate import EMBEDDING_ROUTES, requested_output
from tokenops.pricing.catalog import PriceCatalog
from tokenops.pricing.model import price_usage, scaled, tier_variant
from tokenops.usage import MAX_CALL_TOKENS, Usage

log = logging.getLogger("tokenops.meter")
RECENT = 20_000
MAX_TEXT = 256
TIER_UNPRICED = "service_tier_unpriced"  # error_code of an ok call whose tier has no price row (billed as standard)
# error_code of a call with server-side web searches whose price row has no price for them: its tokens are priced,
# the searches are not (the cost is short of the provider's bill by their fee, and the event says so)
TOOL_FEE_UNPRICED = "tool_fee_unpriced"
# Batch results (routes "batches" and "messages.batches": see tokenops.gateway.batches) are priced with the
# catalog's "batch" variant row where it has one (genai-prices has them for OpenAI from 2026-10-14), else with a
# row derived from the standard one at this factor, recorded as its own price row: OpenAI's Batch API and
# Anthropic's Message Batches both bill 50% of the standard price.
BATCH_ROUTES = frozenset(("batches", "messages.batches"))
BATCH_PRICE_FACTOR = Decimal("0.5")

Listener = Callable[[Call, SpendEvent], Awaitable[None]]


def clean_text(value: str | None, limit: int = MAX_TEXT) -> str | None:
    """Provider-supplied text fit for the ledger and headers: printable and at most ``limit`` characters."""
    if value is None or len(value) > limit or not value.isprintable():
        return None
    return value


class Meter:
    def __init__(self, spool: Spool, catalog: PriceCatalog, metrics: GatewayMetrics, *, source: str = "gateway"):
        self.spool = spool
        self.catalog = catalog
        self.metrics = metrics
        self.source = source
        self.listeners: list[Listener] = []
        self._spooled_rows: set[str] = set()  # price rows this process wrote to its spool
        # Events answered but perhaps not yet drained into the ledger, for GET /v1/tokenops/requests/{id}.
        self.recent: OrderedDict[str, SpendEvent] = OrderedDict()
        self.recent_upstream: dict[str, str] = {}  # OpenAI response id -> request id, for the recent responses calls

    def price(self, call: Call, model_used: str, usage: Usage | None,
              service_tier: str | None = None) -> tuple[Decimal | None, str | None, bool, bool]:  # fmt: skip
        """The cost and price row of a call, whether its service tier went unpriced, and whether its web searches
        did: a tier the response reports (``flex``, ``priority``, ``batch``) is priced with that tier's row; a
        tier the catalog has no row for is priced at the standard rate and flagged (``True``); searches on a row
        without a search price are left out of the cost and flagged (the last ``True``)."""
        if usage is None or usage.total_tokens == 0:
            return ZERO, None, False, False
        row = None
        providers = call.price_providers or (call.provider_name,)
        for model in dict.fromkeys((model_used, call.upstream_model)):
            if model:
                row = self.catalog.lookup(providers, model, call.ts)
                if row is not None:
                    break
        tier_unpriced = False
        if row is not None and call.route in BATCH_ROUTES:  # a batch result: the batch row, else half the standard
            batch_row = self.catalog.lookup((row.provider,), row.model, call.ts, variant="batch")
            row = batch_row or scaled(row, BATCH_PRICE_FACTOR, "batch", "batch = 50% of the standard price (the "
                                      "Batch API's published discount; the catalog has no batch row)")  # fmt: skip
        elif row is not None and (tier := tier_variant(service_tier)):
            tiered = self.catalog.lookup((row.provider,), row.model, call.ts, variant=tier)
            if tiered is not None:
                row = tiered
            else:
                tier_unpriced = True
        call.price_row = row
        if row is None:
            return None, None, False, False
        cost = price_usage(usage, row)
        return cost.total, cost.price_row_id, tier_unpriced, cost.tool_fee_unpriced

    def event(
        self,
        call: Call,
        *,
        status: Status,
        http_status: int,
        usage: Usage | None = None,
        model_used: str | None = None,
        error_code: str | None = None,
        usage_estimated: bool = False,
        ttft: float | None = None,
        upstream_request_id: str | None = None,
        service_tier: str | None = None,
        cost_avoided: Decimal | None = None,
    ) -> SpendEvent:
        """The priced event of a finished call (not yet recorded). ``service_tier``: the tier the provider's
        answer reports; one without a price row is billed at the standard rate and the event says so
        (``error_code`` ``service_tier_unpriced``, unless it already carries a usage problem). Web searches its
        price row has no price for: ``tool_fee_unpriced``, likewise."""
        model_used = clean_text(model_used) or call.upstream_model or call.model_requested or None
        cost, row_id, tier_unpriced, fee_unpriced = self.price(call, model_used or "", usage, service_tier)
        if tier_unpriced and error_code is None:
            error_code = TIER_UNPRICED
        if fee_unpriced and error_code is None:
            error_code = TOOL_FEE_UNPRICED
        latency = (time.perf_counter() - call.started) * 1000.0
        prefix_hash, prefix_tokens, request_hash = fingerprint(call.route, call.body)
        return SpendEvent(
            request_id=call.request_id,
            ts=call.ts,
            source=self.source,
            provider=call.provider_name,
            model_requested=call.client_model or call.downgraded_from or call.model_requested,  # what the client asked for
            model_used=model_used or "",
            route=call.route,
            stream=call.stream,
            usage=usage or Usage(),
            usage_estimated=usage_estimated,
            cost_usd=cost,
            price_row_id=row_id,
            key_id=call.key.id if call.key else None,
            end_user=call.end_user,
            tags=call.tags,
            missing_tags=call.missing_tags,
            status=status,
            http_status=http_status,
            error_code=error_code,
            latency_ms=round(latency, 3),
            ttft_ms=None if ttft is None else round((ttft - call.started) * 1000.0, 3),
            cache=call.cache,
            upstream_request_id=clean_text(upstream_request_id),
            approval_id=call.approval_id,
            route_reason=call.route_reason,
            cost_avoided_usd=cost_avoided,
            prefix_hash=prefix_hash,
            prefix_tokens=min(prefix_tokens, MAX_CALL_TOKENS),
            request_hash=request_hash,
            max_output=requested_output(call) if call.route not in EMBEDDING_ROUTES else None,
        )

    async def record(self, call: Call, **fields: Any) -> SpendEvent:
        """Price and durably record a finished call (see the module docstring); returns its event."""
        if call.recorded is not None:
            return call.recorded
        event = self.event(call, **fields)
        call.recorded = event
        row = call.price_row
        # the price row goes into the spool once per process, in the same write as the first event priced with
        # it: the ledger's writer then needs no catalog of its own to record which prices each cost came from
        prefix = b""
        if row is not None and event.price_row_id == row.id and row.id not in self._spooled_rows:
            prefix = orjson.dumps(price_row_record(row)) + b"\n"
        try:
            await self.spool.append_line(prefix + event.to_json())
        except SpoolUnavailable:
            if event.status in ("ok", "upstream_error"):  # the client gets a 503 in place of that answer
                event = event.with_(status="error", http_status=503, error_code="spool_unavailable")
            call.recorded = event
            self.spool.defer(prefix + event.to_json())
            await self._observed(call, event)
            raise
        if prefix:
            self._spooled_rows.add(event.price_row_id or "")
        await self._observed(call, event)
        return event

    async def _observed(self, call: Call, event: SpendEvent) -> None:
        for listener in self.listeners:
            try:
                await listener(call, event)
            except Exception:  # a listener's bug must not fail a call that is already recorded
                log.exception("listener %r failed on call %s", listener, call.request_id)
        self.recent[event.request_id] = event
        if event.route == "responses" and event.upstream_request_id:
            self.recent_upstream[event.upstream_request_id] = event.request_id
        if len(self.recent) > RECENT:
            _, old = self.recent.popitem(last=False)
            if old.upstream_request_id:
                self.recent_upstream.pop(old.upstream_request_id, None)
        self.metrics.observe(event)

    def lookup_recent(self, request_id: str) -> SpendEvent | None:
        return self.recent.get(request_id)

    def lookup_upstream(self, upstream_id: str) -> SpendEvent | None:
        """A recent Responses call by the id the provider gave its response."""
        request_id = self.recent_upstream.get(upstream_id)
        return None if request_id is None else self.recent.get(request_id)

    def describe(self) -> dict[str, Any]:
        return {"spooled": self.spool.appended, "spool": str(self.spool.path)}
