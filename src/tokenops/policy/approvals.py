"""Approvals: some calls need a person's yes (an expensive model, a budget past its approval threshold).

A call that needs approval and holds no grant gets 403 ``approval_required`` with an approval request id; the
request is recorded (through the spool) so ``tokenops approvals list`` shows it. A person grants it with
``tokenops approvals approve ID [--until DATE] [--max-usd X]``: time-boxed, spend-capped access for that key
and reason. The gateway reloads decisions every few seconds; a denied request answers the next call with the
denial, and a fresh call after that asks again.

A grant's spend cap holds like a hard budget: its spend lives in the policy state as a counter
(:func:`grant_counter`), and each call under the grant reserves its maximum cost there before it is made
(the policy engine does it with the call's budgets, all or nothing), so concurrent calls cannot spend the cap
several times over: a grant ends at most one call's maximum cost over its cap.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenops.call import Call
from tokenops.errors import GatewayError
from tokenops.ledger.records import Approval, new_approval_id
from tokenops.money import format_usd
from tokenops.policy.state import CounterKey, InMemoryState, PolicyState

PENDING_TTL = 7 * 86_400.0  # a pending request is reused for a week, like its expiry in the ledger


def grant_counter(approval_id: str) -> CounterKey:
    """The policy-state counter of a grant's spend."""
    return ("grant:" + approval_id, "")


class Approvals:
    def __init__(self, record: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
                 state: PolicyState | None = None):  # fmt: skip
        self.record = record  # durably records a new request (the spool)
        # grant spend counters and open requests (the policy engine passes its own, shared with other gateways)
        self.state: PolicyState = state or InMemoryState()
        self._by_id: dict[str, Approval] = {}
        self._lock = threading.Lock()

    async def load(self, approvals: Iterable[Approval], spent: dict[str, Decimal]) -> None:
        """Grants from the ledger, with what the ledger holds of their spend (which lags what the gateways have
        settled: a counter only ever moves up to the ledger's figure, never down)."""
        with self._lock:
            self._by_id = {a.id: a for a in approvals}
        for aid, amount in spent.items():
            if aid in self._by_id:
                await self.state.raise_spent(grant_counter(aid), amount)

    async def spent(self, approval_id: str) -> Decimal:
        (counter,) = await self.state.counters([grant_counter(approval_id)])
        return counter.spent

    async def grant_for(self, key_id: str | None, reason: str, now: datetime) -> Approval | None:
        for a in list(self._by_id.values()):
            if a.key_id == key_id and a.reason == reason and a.active(now):
                if a.max_usd is None or await self.spent(a.id) < a.max_usd:
                    return a
        return None

    def grant_ids(self) -> list[str]:
        """Grants whose spend counters must be kept (approved ones, current or not yet pruned from the ledger)."""
        return [a.id for a in self._by_id.values() if a.status == "approved"]

    async def require(self, call: Call, reason: str, now: datetime) -> Approval:
        """The grant that lets this call through for ``reason``; else records a request (one open request per key
        and reason, shared by every gateway) and raises 403."""
        key_id = call.key.id if call.key else None
        grant = await self.grant_for(key_id, reason, now)
        if grant is not None:
            call.approval_id = grant.id
            return grant
        name = f"pending:{key_id}:{reason}"
        fresh = new_approval_id()
        open_id = await self.state.claim(name, fresh, PENDING_TTL)
        known = self._by_id.get(open_id)
        if known is not None and known.status == "denied":
            await self.state.release(name)  # the next call asks again
            raise GatewayError(403, "approval_required",
                               f"approval request {known.id} for {reason} was denied by {known.decided_by}",
                               headers={"x-tokenops-approval-id": known.id})  # fmt: skip
        if known is not None and known.status in ("approved", "expired"):
            await self.state.release(name)  # that grant is used up or over: a new request
            open_id = await self.state.claim(name, fresh, PENDING_TTL)
        if open_id == fresh and self.record is not None:
            try:
                await self.record({
                    "record": "approval", "id": open_id, "key_id": key_id, "reason": reason,
                    "model": call.model_requested, "requested_at": now.isoformat(),
                    "message": f"{call.key.name if call.key else 'a caller'} asks to use {call.model_requested} ({reason})",
                })  # fmt: skip
            except BaseException:
                await self.state.release(name)  # not recorded: the next call asks again
                raise
        spent_note = ""
        if known is not None and known.status == "approved" and known.max_usd is not None:
            spent_note = f" (grant {known.id} used its ${format_usd(known.max_usd)})"
        raise GatewayError(
            403, "approval_required",
            f"{reason} needs approval{spent_note}: ask an admin to run `tokenops approvals approve {open_id}`",
            headers={"x-tokenops-approval-id": open_id},
        )  # fmt: skip
