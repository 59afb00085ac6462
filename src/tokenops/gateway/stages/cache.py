"""Cache stage: answer a call from the response cache (see :mod:`tokenops.gateway.cache`), after the router and
the policy (so the key holds the model that will serve, and a hit still meets budgets and limits).

``call.cache`` (the event's ``cache``): ``off`` (no cache configured), ``bypass`` (the client asked, or the call
is not cacheable: it samples, or its route is not cached), ``miss`` (the answer will be kept if it can be),
``hit``, or ``error`` (the store failed: the call went on uncached). The ``X-TokenOps-Cache`` header keeps to
its contract, ``hit`` / ``miss`` / ``off``: ``bypass`` is ``off``, ``error`` is ``miss``.
"""

from __future__ import annotations

import logging
from typing import Any

from tokenops.call import Call
from tokenops.config import CacheConfig
from tokenops.gateway.cache import (
    CACHED_ROUTES,
    ESTIMATED_ROUTES,
    CacheEntry,
    CacheStore,
    CacheUnavailable,
    deterministic,
    keys,
    last_user_text,
    whole_embeddings,
)
from tokenops.gateway.stages import Answer
from tokenops.ledger.events import SpendEvent
from tokenops.pricing.model import price_usage

log = logging.getLogger("tokenops.cache")
BYPASS_HEADER = "x-tokenops-cache"


class CacheStage:
    def __init__(self, config: CacheConfig | None = None, store: CacheStore | None = None, semantic: Any = None):
        self.config = config or CacheConfig()
        self.store = store
        self.semantic = semantic  # a SemanticIndex (mode semantic), else None

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off" and self.store is not None

    def _scope(self, call: Call) -> str | None:
        if self.config.scope == "key":
            return f"key:{call.key.id}" if call.key else None
        value = call.tags.get(self.config.scope)
        return f"{self.config.scope}:{value}" if value else None  # no value: nobody to share with, not cached

    async def __call__(self, call: Call) -> Answer | None:
        if not self.enabled:
            call.cache = "off"
            return None
        scope = self._scope(call)
        if (call.headers.get(BYPASS_HEADER, "").lower() == "bypass" or scope is None
                or call.route not in CACHED_ROUTES
                or not (self.config.nondeterministic or deterministic(call.route, call.body))):  # fmt: skip
            call.cache = "bypass"
            return None
        exact, context = keys(scope, call.upstream_route or call.route, call.provider_name, call.upstream_model,
                              call.stream, call.body)  # fmt: skip
        assert self.store is not None
        try:
            entry = await self.store.get(exact)
            if entry is None and self.semantic is not None:
                text = last_user_text(call.route, call.body)
                found = await self.semantic.find(context, text) if text is not None else None
                entry = await self.store.get(found) if found is not None else None
        except CacheUnavailable as exc:
            log.warning("call %s: response cache unavailable (%s): not cached", call.request_id, exc)
            call.cache = "error"
            return None
        if entry is None:
            call.cache = "miss"
            call.cache_keys = (exact, context)
            return None
        call.cache = "hit"
        row = call.quote_row
        avoided = price_usage(entry.usage, row).total if row is not None else None
        return Answer(200, entry.body, {"content-type": entry.content_type},
                      fields={"model_used": entry.model_used, "cost_avoided": avoided})  # fmt: skip

    async def keep(self, call: Call, event: SpendEvent | None, status: int, content_type: str, body: bytes) -> None:
        """After a miss: keep the answer the client got, if it is whole and its usage is the provider's own (or, on a
        route whose provider reports none, the estimate it was billed at)."""
        if call.cache_keys is None or event is None or status != 200 or event.status != "ok" \
                or len(body) > self.config.max_entry_bytes or self.store is None:  # fmt: skip
            return
        if (event.usage_estimated or event.error_code is not None) and not (
                call.route in ESTIMATED_ROUTES and event.error_code in (None, "usage_missing")
                and whole_embeddings(call.route, call.body, body)):  # fmt: skip
            return
        exact, context = call.cache_keys
        entry = CacheEntry(body, content_type, event.usage, event.model_used)
        try:
            await self.store.put(exact, entry, self.config.ttl)
            text = last_user_text(call.route, call.body)
            if self.semantic is not None and text is not None:
                await self.semantic.add(context, text, exact, self.config.ttl)
        except CacheUnavailable as exc:
            log.warning("call %s: response cache unavailable (%s): answer not kept", call.request_id, exc)

