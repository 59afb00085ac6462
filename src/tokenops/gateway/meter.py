"""Meter: turns a finished call into a priced spend event and makes it durable before the client is done.

Pricing uses the row in force at the call's start, looked up under the model the provider says it used
(``gpt-4o-2024-08-06``), falling back to the name sent upstream. No price: the event is *unpriced* (cost
``None``), the response says ``X-TokenOps-Cost-USD: unpriced``. Calls that carried no usage (rejections,
upstream errors) cost exactly 0.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from tokenops.gateway.call import Call
from tokenops.gateway.metrics import GatewayMetrics
from tokenops.ledger.events import SpendEvent
from tokenops.ledger.spool import Spool
from tokenops.money import ZERO
from tokenops.pricing.catalog import PriceCatalog
from tokenops.pricing.model import price_usage
from tokenops.usage import Usage

RECENT = 20_000


class Meter:
    def __init__(self, spool: Spool, catalog: PriceCatalog, metrics: GatewayMetrics, *, source: str = "gateway"):
        self.spool = spool
        self.catalog = catalog
        self.metrics = metrics
        self.source = source
        self.on_record: Callable[[Call, SpendEvent], Awaitable[None]] | None = None  # the policy engine's settle
        # Events answered but perhaps not yet drained into the ledger, for GET /v1/tokenops/requests/{id}.
        self.recent: OrderedDict[str, SpendEvent] = OrderedDict()

    def price(self, call: Call, model_used: str, usage: Usage | None) -> tuple[Decimal | None, str | None]:
        if usage is None or usage.total_tokens == 0:
            return ZERO, None
        row = None
        for model in dict.fromkeys((model_used, call.upstream_model)):
            if model:
                row = self.catalog.lookup(call.price_providers or (call.provider_name,), model, call.ts)
                if row is not None:
                    break
        call.price_row = row
        if row is None:
            return None, None
        cost = price_usage(usage, row)
        return cost.total, cost.price_row_id

    async def record(
        self,
        call: Call,
        *,
        status: str,
        http_status: int,
        usage: Usage | None = None,
        model_used: str | None = None,
        error_code: str | None = None,
        usage_estimated: bool = False,
        ttft: float | None = None,
        upstream_request_id: str | None = None,
    ) -> SpendEvent:
        model_used = model_used or call.upstream_model or call.model_requested or None
        cost, row_id = self.price(call, model_used, usage)
        latency = (time.perf_counter() - call.started) * 1000.0
        event = SpendEvent(
            request_id=call.request_id,
            ts=call.ts,
            source=self.source,
            provider=call.provider_name,
            model_requested=call.downgraded_from or call.model_requested,  # what the client asked for
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
            status=status,  # type: ignore[arg-type]
            http_status=http_status,
            error_code=error_code,
            latency_ms=round(latency, 3),
            ttft_ms=None if ttft is None else round((ttft - call.started) * 1000.0, 3),
            cache=call.cache,
            upstream_request_id=upstream_request_id,
            approval_id=call.approval_id,
        )
        await self.spool.append(event)
        if self.on_record is not None:
            await self.on_record(call, event)
        self.recent[event.request_id] = event
        if len(self.recent) > RECENT:
            self.recent.popitem(last=False)
        self.metrics.observe(event)
        return event

    def lookup_recent(self, request_id: str) -> SpendEvent | None:
        return self.recent.get(request_id)

    def describe(self) -> dict[str, Any]:
        return {"spooled": self.spool.appended, "spool": str(self.spool.path)}
