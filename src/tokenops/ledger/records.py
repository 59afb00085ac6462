"""Governance records the ledger keeps beside spend events: approval requests and their decisions.

(Budgets, limits and rules defined at run time are stored as their definitions, JSON objects validated by the
policy layer; alerts as the alert's fields.) These are values: the rules about them (when a pending request
expires, what may be decided) live in :mod:`tokenops.services.approvals`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from tokenops.money import format_usd

PENDING_EXPIRY = timedelta(days=7)  # an approval request nobody answered within a week is void
ApprovalStatus = Literal["pending", "approved", "denied", "expired"]


def new_approval_id() -> str:
    return "apr_" + secrets.token_hex(6)


@dataclass(frozen=True)
class Approval:
    id: str
    status: ApprovalStatus
    key_id: str | None
    reason: str  # budget:<name> | rule:<name>
    model: str | None
    message: str | None
    requested_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    until: datetime | None = None
    max_usd: Decimal | None = None

    def active(self, now: datetime) -> bool:
        return self.status == "approved" and (self.until is None or now < self.until)

    def as_of(self, now: datetime) -> Approval:
        """The request as it stands at ``now``: a pending one unanswered for a week, or a grant past its
        ``until``, is expired."""
        if self.status == "pending" and now - self.requested_at > PENDING_EXPIRY:
            return replace(self, status="expired")
        if self.status == "approved" and self.until is not None and now >= self.until:
            return replace(self, status="expired")
        return self

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "key_id": self.key_id, "reason": self.reason, "model": self.model,
            "message": self.message, "requested_at": self.requested_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None, "decided_by": self.decided_by,
            "until": self.until.isoformat() if self.until else None,
            "max_usd": None if self.max_usd is None else format_usd(self.max_usd),
        }  # fmt: skip


AlertKey = tuple[str, str, str, float | None]  # (kind, budget, period start ISO, threshold)
