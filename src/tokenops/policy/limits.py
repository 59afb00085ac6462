"""Rate limits per key, end user or scope: requests/minute, tokens/minute and USD/hour (token buckets).

A call takes one request, its estimated tokens (typical input + requested output, as OpenAI's own limiter
counts them) and its maximum cost from the buckets of every limit it falls in, all or none; once the real
usage is known the difference is given back (or taken). Refused calls get 429 ``rate_limited`` with
``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from tokenops.call import Call
from tokenops.errors import GatewayError
from tokenops.policy.config import LimitConfig
from tokenops.policy.state import BucketKey, BucketView, BucketWant, InMemoryState, PolicyState


@dataclass
class RateClaim:
    key: BucketKey
    amount: Decimal


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``20ms``."""
    if seconds < 1:
        return f"{max(1, int(seconds * 1000))}ms"
    s = math.ceil(seconds)
    m, s = divmod(s, 60)
    return f"{m}m{s}s" if m else f"{s}s"


class RateLimiter:
    def __init__(self, limits: Sequence[LimitConfig], state: PolicyState | None = None):
        self.limits = tuple(limits)
        self.state: PolicyState = state or InMemoryState()

    def subject(self, limit: LimitConfig, call: Call) -> str | None:
        if limit.per == "key":
            return call.key.id if call.key else None
        if limit.per == "user":
            return call.end_user
        return "*"

    async def take(self, call: Call, model: str, tokens: int, cost: Decimal | None) -> list[RateClaim]:
        """Take from every applicable bucket or raise 429; sets the x-ratelimit-* headers on the call."""
        key_id = call.key.id if call.key else None
        wants: list[BucketWant] = []
        for limit in self.limits:
            if not limit.scope.matches(call.tags, key_id, call.end_user, model):
                continue
            subject = self.subject(limit, call)
            if subject is None:
                continue
            if limit.requests_per_minute:
                wants.append(BucketWant((limit.name, subject, "requests"), Decimal(1),
                                        Decimal(limit.requests_per_minute), 60.0))  # fmt: skip
            if limit.tokens_per_minute:
                wants.append(BucketWant((limit.name, subject, "tokens"), Decimal(tokens),
                                        Decimal(limit.tokens_per_minute), 60.0))  # fmt: skip
            if limit.usd_per_hour is not None and cost is not None:
                wants.append(BucketWant((limit.name, subject, "usd"), cost, limit.usd_per_hour, 3600.0))
        if not wants:
            return []
        admitted, wait, buckets = await self.state.take(wants)
        self._headers(call, wants, buckets)
        if not admitted:
            retry = max(1, math.ceil(wait))
            raise GatewayError(
                429, "rate_limited", f"rate limit reached; retry in {retry}s", kind="rate_limit_error",
                headers={"retry-after": str(retry)},
            )  # fmt: skip
        return [RateClaim(w.key, w.amount) for w in wants]

    @staticmethod
    def _headers(call: Call, wants: list[BucketWant], buckets: list[BucketView]) -> None:
        # The tightest bucket of each measure is the one a client should pace itself by.
        tightest: dict[str, BucketView] = {}
        for w, b in zip(wants, buckets, strict=True):
            measure = w.key[2]
            if measure in ("requests", "tokens") and (measure not in tightest or b.level < tightest[measure].level):
                tightest[measure] = b
        for measure, b in tightest.items():
            call.response_headers[f"x-ratelimit-limit-{measure}"] = str(int(b.capacity))
            call.response_headers[f"x-ratelimit-remaining-{measure}"] = str(max(0, int(b.level)))
            call.response_headers[f"x-ratelimit-reset-{measure}"] = _duration(b.seconds_until(b.capacity))

    async def settle(self, claims: Sequence[RateClaim], actual_tokens: int, actual_cost: Decimal | None) -> None:
        for c in claims:
            measure = c.key[2]
            if measure == "tokens":
                await self.state.adjust(c.key, c.amount - Decimal(actual_tokens))
            elif measure == "usd":
                await self.state.adjust(c.key, c.amount - (actual_cost if actual_cost is not None else c.amount))
